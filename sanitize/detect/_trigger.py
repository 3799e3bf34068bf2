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
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import binom, fisher_exact

from sanitize.detect._border import CHUNK, Refined, block_of, pool, refine, settle, settle_on_images
from sanitize.detect._obey import cut_by_answers, other_side
from sanitize.detect._response import PROBE_IMAGES, Responder, ResponseTest, _patterns, prober

#: Largest valley where other evidence decides: the gap at most half as dense as the group, a dip
#: rather than a continuum (clean classes' best splits show 0.6 to 1.2 on the shapes and digits runs;
#: poisons 0 to 0.22, the red team's BadNets 5 % on 2 and 5 shape classes). A group the model has
#: confirmed with a shallower dip is cut where the model's answers change instead (:func:`obeyed`).
DIP_VALLEY = 0.5
#: Probe images each candidate is first screened on, and each rival at the searched class's strength;
#: only a class whose group turns more of them than every rival does is measured on ``PROBE_IMAGES``
#: (the screened images and the rest). A trigger's 37 % against natural groups' at most 10 % shows on
#: 100; a clean class then costs a few hundred images, not its rivals times 400.
SCREEN_IMAGES = 100
#: Groups of one colour at one position taken per class as candidates (:func:`pixel_candidates`).
PIXEL_GROUPS = 3
#: Bins per channel of a position's colour (fewer where classes x positions x colours would exceed
#: ``PIXEL_BINS`` counts: a memory bound).
PIXEL_LEVELS = 8
PIXEL_BINS = 2**24


@dataclass(frozen=True)
class Candidate:
    """One class's top group along one of its directions (global rows of the training set)."""

    label: int
    rows: np.ndarray
    #: "direction" (the class's top images along an input-gap direction) or "colour" (its images of
    #: one colour at one position, :func:`pixel_candidates`).
    kind: str = "direction"


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
    classes are tested. A class whose group turns no more of the screening images than some rival
    does is not measured further: the full test is an intersection, and its level holds. Returns the
    best candidate and its test per searched class."""
    if not searched or not candidates:
        return {}
    keyed = {i: cand for i, cand in enumerate(candidates)}
    by_class = {i: cand.label for i, cand in keyed.items()}
    patterns = _patterns(responder, labels, {i: cand.rows for i, cand in keyed.items()}, rng, keyed_by=by_class)
    flips = prober(responder, labels, rng)

    # Screen every candidate on a few probe images; the best of each class is the class's candidate.
    screen = {i: flips(keyed[i].label, p, SCREEN_IMAGES) for i, p in patterns.items()}

    def rate(counts: tuple[int, int]) -> float:
        return counts[0] / max(counts[1], 1)

    best: dict[int, int] = {}
    for i in screen:
        c = keyed[i].label
        if c not in best or rate(screen[i]) > rate(screen[best[c]]):
            best[c] = i
    alpha = false_alarm / len(searched)
    out: dict[int, tuple[Candidate, ResponseTest]] = {}
    for c in searched:
        if c not in best:
            continue
        i = best[c]
        strength = float(np.linalg.norm(patterns[i]))
        # The rivals: every other class's candidate, strongest first, then the class's own strongest
        # top group along another direction (sharing under half the images): a class that many images
        # turn to whatever is stamped (Fashion-MNIST's pullovers, between shirts and coats: 74 % against
        # the other classes' 58 %) turns as many to its other groups.
        rivals = sorted((best[o] for o in best if o != c), key=lambda j: -rate(screen[j]))
        own = [j for j in screen if keyed[j].label == c and j != i and _overlap(keyed[i], keyed[j]) < 0.5]
        if own:
            rivals.append(max(own, key=lambda j: rate(screen[j])))
        matched = {j: _scaled(patterns[j], strength) for j in rivals}
        # First on the screening images: a group that turns no more of them than some rival at the same
        # strength is not measured further (its test could not pass: it is an intersection of these).
        x, n = screen[i]
        seen: dict[int, tuple[int, int]] = {}
        stopped: int | None = None
        for j in rivals if x > 0 else []:
            seen[j] = flips(keyed[j].label, matched[j], SCREEN_IMAGES)
            if rate(seen[j]) >= rate((x, n)):
                stopped = j
                break
        others = {keyed[j].label: rate(seen[j]) for j in seen}
        if not seen or stopped is not None:
            p = 1.0 if stopped is None else _fisher((x, n), seen[stopped])
            out[c] = (keyed[i], ResponseTest(rate((x, n)), x, n, others, p, False))
            continue
        # Then on the rest of the probe images, the strongest rival at the screen first: the test fails
        # at the first one it cannot beat.
        more = flips(c, patterns[i], PROBE_IMAGES, SCREEN_IMAGES)
        x, n = x + more[0], n + more[1]
        p, beaten = 0.0, 0
        for j in sorted(rivals, key=lambda j: -rate(seen[j])):
            if p > alpha:
                break
            more = flips(keyed[j].label, matched[j], PROBE_IMAGES, SCREEN_IMAGES)
            counts = (seen[j][0] + more[0], seen[j][1] + more[1])
            others[keyed[j].label] = rate(counts)
            p = max(p, _fisher((x, n), counts))
            beaten += 1
        passed = beaten == len(rivals) and n > 0 and p <= alpha
        out[c] = (keyed[i], ResponseTest(rate((x, n)), x, n, others, p, passed))
    return out


def _scaled(pattern: np.ndarray, strength: float) -> np.ndarray:
    """``pattern`` scaled to L2 norm ``strength`` (unchanged when it is zero)."""
    norm = float(np.linalg.norm(pattern))
    return pattern * (strength / norm) if norm > 0 else pattern


def _fisher(own: tuple[int, int], rival: tuple[int, int]) -> float:
    """One-sided Fisher's exact test that ``own`` (flips, tried) turns more than ``rival`` does."""
    (x, n), (xo, no) = own, rival
    if n == 0 or no == 0:
        return 1.0
    return float(fisher_exact([[x, n - x], [xo, no - xo]], alternative="greater")[1])


def _overlap(a: Candidate, b: Candidate) -> float:
    """The share of ``a``'s images that ``b`` holds too."""
    return len(np.intersect1d(a.rows, b.rows)) / max(len(a.rows), 1)


def _codes(images: np.ndarray, block: int, levels: int) -> np.ndarray:
    """Each image's colour code at each position (m, P): the image average-pooled over ``block`` x
    ``block`` squares, each channel cut into ``levels`` equal bins, the channels' bins as one code."""
    x = pool(images, block)
    q = np.minimum((x * (levels / 256.0)).astype(np.int64), levels - 1)
    code = np.zeros(x.shape[:3], dtype=np.int64)
    for k in range(x.shape[3]):
        code = code * levels + q[..., k]
    return code.reshape(len(x), -1)


def pixel_candidates(
    responder: Responder, labels: np.ndarray, least: dict[int, int], most: dict[int, int], per_class: int = PIXEL_GROUPS
) -> list[Candidate]:
    """Each class's images that share one colour at one position far more often than the other
    classes' images do there: a patch stamped on the poisons (BadNets' 3x3 square) gives its class a
    group that holds one value where almost no other image does, though the patch is too small to
    move the image along any direction of input space. Per class, the ``per_class`` groups of
    ``least[c]`` to ``most[c]`` images with the smallest binomial tail probability of their count,
    at the other classes' rate of that colour at that position (sharing under half their images).
    A class whose images differ from the others' in colour everywhere has many such groups; the
    patch's group is then one among them, and the screening picks it only if it ranks in the first.
    These are candidates only: the model's response decides (:func:`search`)."""
    n = len(labels)
    if n == 0:
        return []
    h, w, ch = responder.images(np.zeros(1, dtype=np.int64)).shape[1:]
    block = block_of(h, w)
    classes = sorted(least)
    levels = PIXEL_LEVELS
    while levels > 2 and len(classes) * (h // block) * (w // block) * levels**ch > PIXEL_BINS:
        levels //= 2
    codes_per_position = levels**ch
    positions = (h // block) * (w // block)
    counts = {c: np.zeros(positions * codes_per_position, dtype=np.int64) for c in classes}
    offsets = np.arange(positions, dtype=np.int64) * codes_per_position
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(n, start + CHUNK))
        code = _codes(responder.images(rows), block, levels) + offsets
        for c in classes:
            mine = code[labels[rows] == c]
            if len(mine):
                counts[c] += np.bincount(mine.ravel(), minlength=len(counts[c]))
    total = sum(counts.values())
    sizes = {c: int((labels == c).sum()) for c in classes}
    out: list[Candidate] = []
    for c in classes:
        inside, size = counts[c], sizes[c]
        others = n - size
        if others == 0:
            continue
        rate = (total - inside + 1) / (others + codes_per_position)
        ok = np.flatnonzero((inside >= least[c]) & (inside <= most[c]) & (inside > rate * size))
        if len(ok) == 0:
            continue
        tail = binom.logsf(inside[ok] - 1, size, rate[ok])
        best = ok[np.argsort(tail, kind="stable")][: per_class * 4]
        wanted = np.unique(best // codes_per_position)
        rows_c = np.flatnonzero(labels == c)
        code_c = np.concatenate(
            [_codes(responder.images(rows_c[i : i + CHUNK]), block, levels)[:, wanted] for i in range(0, size, CHUNK)]
        )
        taken: list[Candidate] = []
        for at in best:
            pos, value = divmod(int(at), codes_per_position)
            cand = Candidate(c, rows_c[code_c[:, np.searchsorted(wanted, pos)] == value], "colour")
            if all(_overlap(cand, t) < 0.5 for t in taken):
                taken.append(cand)
            if len(taken) == per_class:
                break
        out.extend(taken)
    return out


def trigger_groups(
    responder: Responder,
    x: np.ndarray,
    labels: np.ndarray,
    means: dict[int, np.ndarray],
    axes: dict[int, list[np.ndarray]],
    least: dict[int, int],
    most_share: float,
    searched: list[int],
    white_of: Callable[[int], np.ndarray],
    rng: np.random.Generator,
    false_alarm: float,
) -> dict[int, tuple[Refined | None, ResponseTest]]:
    """Every class's top ``least[c]`` samples along each of its ``axes`` (input space, centred on
    ``means[c]``) are candidates, and its groups of one colour at one position (:func:`pixel_candidates`,
    at most ``most_share`` of the class); the ``searched`` classes are tested (:func:`search`), and a class
    whose test passes gets its matched filter's group (:func:`refine`, whitened by ``white_of(c)``;
    None where no group parts). A group whose valley exceeds ``DIP_VALLEY`` (no gap to cut at) is cut
    where the model's answers change instead, or None; and a group whose class's rest carries the
    pattern the model obeys more is that rest (:func:`obeyed`). A group the matched filter parts must
    then carry the pattern itself: the same test of its own pattern against every other class's
    candidates (:func:`search`, at ``false_alarm``; a clean icon class's top 10 along a direction
    turned 12.8 % against its rivals' 2.2 %, and its filter parted 54 % of the class, whose own
    pattern turned none). Returns, per searched class tested, (the group or None, the test)."""
    candidates = []
    for c, found in axes.items():
        rows = np.flatnonzero(labels == c)
        centred = x[rows] - means[c]
        for axis in found:
            top = np.argsort(-(centred @ axis), kind="stable")[: least[c]]
            candidates.append(Candidate(c, rows[np.sort(top)]))
    most = {c: int(most_share * (labels == c).sum()) for c in least}
    candidates += pixel_candidates(responder, labels, least, most)
    out: dict[int, tuple[Refined | None, ResponseTest]] = {}
    for c, (cand, test) in search(responder, labels, candidates, searched, rng, false_alarm).items():
        group = None
        if test.passed:
            rows = np.flatnonzero(labels == c)
            at, centred = np.searchsorted(rows, cand.rows), x[rows] - means[c]
            if cand.kind == "colour":  # a patch: where its images agree with the group, as the model sees them
                group = settle_on_images(responder, rows, at, false_alarm, x.shape[1])
            if group is None:
                group = refine(centred, white_of(c), at)
            if group is None and cand.kind == "colour":  # a patch neither parts: where the inputs agree
                group = settle(centred, at, false_alarm)
            if group is not None:
                group = obeyed(responder, labels, centred, rows, group, least[c], rng, false_alarm)
            if group is not None and group.fitted is None and group.support is None:
                # A matched filter grown from a few images can part a broad side of the class that
                # no longer carries what the model obeyed: the group itself must pass the same test.
                rivals = [other for other in candidates if other.label != c]
                tests = search(responder, labels, [*rivals, Candidate(c, rows[group.members])], [c], rng, false_alarm)
                then = tests[c][1] if c in tests else ResponseTest(0.0, 0, 0, {}, 1.0, False)
                test = replace(test, parted=then)
                group = group if then.passed else None
        out[c] = (group, test)
    return out


def obeyed(
    responder: Responder,
    labels: np.ndarray,
    centred: np.ndarray,
    rows: np.ndarray,
    group: Refined,
    least: int,
    rng: np.random.Generator,
    false_alarm: float,
) -> Refined | None:
    """``group`` (positions in the class ``rows``, whose inputs less their mean are ``centred``) as the
    model's answers place it (:mod:`sanitize.detect._obey`): the rest of the class where the model
    obeys the rest's pattern far more (``other_side``); where it parts with no dip, cut where the
    answers change (``cut_by_answers``), or None when they do not."""
    sides = other_side(responder, labels, rows, group.members, rng, false_alarm)
    if sides is not None:
        rest = np.setdiff1d(np.arange(len(rows)), group.members)
        group = replace(group, members=rest, cut=-group.cut, side=-group.side, sides=sides)
    if group.valley <= DIP_VALLEY:
        return group
    found = cut_by_answers(responder, labels, rows, group.members, group.score(centred), least, rng, false_alarm)
    if found is None:
        return None
    members, cut, asked = found
    return replace(group, members=members, cut=cut, asked=asked)
