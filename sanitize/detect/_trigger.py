"""Trigger search: a group under every bar of input space, found by the pattern the model obeys.

At a low poison rate an additive trigger (a sinusoid, a blended pattern) still ranks its poisons at
the top of their class along input gap's directions, but the class's own variation fills the gap
between them and the rest: no valley, no separation to speak of (SIG at 1 % on the emoji: the 20
poisons are the top 10 along the class's first direction, AUROC 0.999, valley 0.53). Where the
reference model learnt the trigger, it says so: the pattern of those top images, stamped on images
of other classes, turns them to the class far more often than the same-sized top group of any other
class does (:func:`search`). Once the model has confirmed that a class's top group carries a
trigger, the group's own mean difference, whitened as input gap whitens, is a matched filter for it
(:func:`refine`): scored leave-one-out so that a member does not lift its own score, the poisons
part from their class with an empty gap (the emoji's 20 SIG poisons: 20 of the 21 beyond it).

The decision is the response test's (Fisher's exact test against every other class's top group at
the same strength, an intersection-union test, Bonferroni over the classes searched): no new
threshold. The group size searched is input gap's smallest group (``least``), so a poisoning of
fewer images than that is not looked for here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import fisher_exact

from sanitize.detect._response import Responder, ResponseTest, _patterns, prober
from sanitize.detect._stats import robust_sd, two_means_cut, valley_ratio, widest_gap

#: Most rounds of the matched filter's refinement (the emoji SIG group settled after one).
REFINE_ROUNDS = 4
#: Probe images each candidate is first screened on (the best of each class is then measured on
#: ``PROBE_IMAGES``): a trigger's 37 % against natural groups' at most 10 % shows on 100.
SCREEN_IMAGES = 100


@dataclass(frozen=True)
class Candidate:
    """One class's top group along one of its directions (global rows of the training set)."""

    label: int
    rows: np.ndarray


def search(
    responder: Responder,
    labels: np.ndarray,
    candidates: list[Candidate],
    searched: list[int],
    rng: np.random.Generator,
    false_alarm: float,
) -> dict[int, tuple[Candidate, ResponseTest]]:
    """For each ``searched`` class, its candidate whose pattern turns the most probe images of other
    classes to it, tested against every other class's such candidate with its pattern scaled to the
    same L2 norm (Fisher's exact test, one-sided; the largest p over the other classes, at most
    ``false_alarm / len(searched)``). Every class's candidates are the null; only the searched
    classes are tested. Returns the best candidate and its test per searched class."""
    if not searched or not candidates:
        return {}
    keyed = {i: cand for i, cand in enumerate(candidates)}
    by_class = {i: cand.label for i, cand in keyed.items()}
    patterns = _patterns(responder, labels, {i: cand.rows for i, cand in keyed.items()}, rng, keyed_by=by_class)
    flips = prober(responder, labels, rng)

    # Screen every candidate on a few probe images; the best of each class is then measured in full.
    screen = {i: flips(keyed[i].label, p, SCREEN_IMAGES) for i, p in patterns.items()}
    best: dict[int, int] = {}
    for i, (x, n) in screen.items():
        c = keyed[i].label
        if c not in best or x / max(n, 1) > screen[best[c]][0] / max(screen[best[c]][1], 1):
            best[c] = i
    full = {c: flips(c, patterns[i]) for c, i in best.items() if c in searched}
    alpha = false_alarm / len(searched)
    out: dict[int, tuple[Candidate, ResponseTest]] = {}
    for c, (x, n) in full.items():
        i = best[c]
        strength = float(np.linalg.norm(patterns[i]))
        others: dict[int, float] = {}
        p = 1.0 if x == 0 or n == 0 else 0.0
        # The strongest other classes first: the test fails at the first one it cannot beat. Then the
        # class's own strongest top group along another direction (sharing under half the images): a
        # class that many images turn to whatever is stamped (Fashion-MNIST's pullovers, between shirts
        # and coats: 74 % against the other classes' 58 %) turns as many to its other groups.
        rivals = sorted((best[o] for o in best if o != c), key=lambda j: -screen[j][0] / max(screen[j][1], 1))
        own = [j for j in screen if keyed[j].label == c and j != i and _overlap(keyed[i], keyed[j]) < 0.5]
        if own:
            rivals.append(max(own, key=lambda j: screen[j][0] / max(screen[j][1], 1)))
        beaten = 0
        for j in rivals:
            if p > alpha:
                break
            o, pattern = keyed[j].label, patterns[j]
            norm = float(np.linalg.norm(pattern))
            xo, no = flips(o, pattern * (strength / norm) if norm > 0 else pattern)
            others[o] = max(others.get(o, 0.0), xo / no if no else 0.0)
            if n and no:
                p = max(p, float(fisher_exact([[x, n - x], [xo, no - xo]], alternative="greater")[1]))
            beaten += 1
        passed = len(rivals) > 0 and beaten == len(rivals) and n > 0 and p <= alpha
        out[c] = (keyed[i], ResponseTest(x / n if n else 0.0, x, n, others, p if others else 1.0, passed))
    return out


def _overlap(a: Candidate, b: Candidate) -> float:
    """The share of ``a``'s images that ``b`` holds too."""
    return len(np.intersect1d(a.rows, b.rows)) / max(len(a.rows), 1)


@dataclass(frozen=True)
class Refined:
    """The matched filter's group of a class: scores of every member of the class along ``axis`` (in
    the whitened coordinates' pre-image, input space), leave-one-out for the group."""

    axis: np.ndarray
    centre: float
    scale: float
    members: np.ndarray
    separation: float
    valley: float
    cut: float


def refine(centred: np.ndarray, white: np.ndarray, start: np.ndarray) -> Refined | None:
    """The group that the mean difference of ``start`` (positions in the class) finds, as a matched
    filter: whiten the class (``centred`` (m, d), ``white`` (d, k)), score every sample along the
    group's mean difference from the rest, each member against the mean of the others (leave one
    out), split the scores with exact 2-means, and repeat with the group above the cut until it
    settles. None when no group of at least two remains."""
    z = centred @ white
    members = np.sort(np.asarray(start, dtype=np.int64))
    scores = np.zeros(len(z))
    for _ in range(REFINE_ROUNDS):
        k = len(members)
        if k < 2 or k > len(z) - 2:
            return None
        inside = np.zeros(len(z), dtype=bool)
        inside[members] = True
        d = z - z[~inside].mean(axis=0)
        total = d[inside].sum(axis=0)
        g = total / k
        norm = float(np.linalg.norm(g))
        if norm == 0:
            return None
        scores = d @ g / norm
        loo = (total[None, :] - d[inside]) / (k - 1)
        scores[inside] = np.einsum("ij,ij->i", d[inside], loo) / np.maximum(np.linalg.norm(loo, axis=1), 1e-12)
        s = np.sort(scores)
        j = two_means_cut(s)
        cut = (s[j - 1] + s[j]) / 2
        found = np.flatnonzero(scores > cut)
        if np.array_equal(found, members):
            break
        members = found
    inside = np.zeros(len(z), dtype=bool)
    inside[members] = True
    if inside.sum() < 2 or (~inside).sum() < 2:
        return None
    rest = scores[~inside]
    centre = float(np.median(rest))
    scale = robust_sd(rest, centre, fallback=1.0)
    q = (scores - centre) / scale
    separation = float(np.median(q[inside]))
    valley = valley_ratio(q[~inside], q[inside])
    flagged = q >= widest_gap(np.sort(q), 0.0, separation)
    # One linear axis for scoring: the group's whole mean difference (members then score at least as
    # high as they did left out, in the measured runs); the cut parts the flagged from the rest on it.
    plain = z @ (g / norm)
    offset = float(np.median(plain[~inside]))
    p = (plain - offset) / scale
    if flagged.all() or not flagged.any():
        return None
    low, high = float(p[~flagged].max()), float(p[flagged].min())
    if low < high:
        cut = (low + high) / 2
    else:  # the left-out scores parted them, the whole axis does not: cut it where it parts most
        cut = widest_gap(np.sort(p), 0.0, float(np.median(p[inside])))
    return Refined(white @ (g / norm), offset, scale, np.flatnonzero(p >= cut), separation, valley, cut)


def trigger_groups(
    responder: Responder,
    x: np.ndarray,
    labels: np.ndarray,
    means: dict[int, np.ndarray],
    axes: dict[int, list[np.ndarray]],
    least: dict[int, int],
    searched: list[int],
    white_of: Callable[[int], np.ndarray],
    rng: np.random.Generator,
    false_alarm: float,
) -> dict[int, tuple[Refined | None, ResponseTest]]:
    """Every class's top ``least[c]`` samples along each of its ``axes`` (input space, centred on
    ``means[c]``) are candidates; the ``searched`` classes are tested (:func:`search`), and a class
    whose test passes gets its matched filter's group (:func:`refine`, whitened by ``white_of(c)``;
    None where no group parts). Returns, per searched class tested, (the group or None, the test)."""
    candidates = []
    for c, found in axes.items():
        rows = np.flatnonzero(labels == c)
        centred = x[rows] - means[c]
        for axis in found:
            top = np.argsort(-(centred @ axis), kind="stable")[: least[c]]
            candidates.append(Candidate(c, rows[np.sort(top)]))
    out: dict[int, tuple[Refined | None, ResponseTest]] = {}
    for c, (cand, test) in search(responder, labels, candidates, searched, rng, false_alarm).items():
        group = None
        if test.passed:
            rows = np.flatnonzero(labels == c)
            group = refine(x[rows] - means[c], white_of(c), np.searchsorted(rows, cand.rows))
        out[c] = (group, test)
    return out
