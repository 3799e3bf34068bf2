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
from scipy.stats import binom, chi2, fisher_exact

from sanitize.detect._obey import cut_by_answers, other_side
from sanitize.detect._response import PROBE_IMAGES, Responder, ResponseTest, _patterns, prober
from sanitize.detect._stats import robust_sd, two_means_cut, valley_ratio, widest_gap

#: Largest valley where other evidence decides: the gap at most half as dense as the group, a dip
#: rather than a continuum (clean classes' best splits show 0.6 to 1.2 on the shapes and digits runs;
#: poisons 0 to 0.22, the red team's BadNets 5 % on 2 and 5 shape classes). A group the model has
#: confirmed with a shallower dip is cut where the model's answers change instead (:func:`obeyed`).
DIP_VALLEY = 0.5
#: Most rounds of the matched filter's refinement (the emoji SIG group settled after one).
REFINE_ROUNDS = 4
#: Probe images each candidate is first screened on, and each rival at the searched class's strength;
#: only a class whose group turns more of them than every rival does is measured on ``PROBE_IMAGES``
#: (the screened images and the rest). A trigger's 37 % against natural groups' at most 10 % shows on
#: 100; a clean class then costs a few hundred images, not its rivals times 400.
SCREEN_IMAGES = 100
#: Groups of one colour at one position taken per class as candidates (:func:`pixel_candidates`).
PIXEL_GROUPS = 3
#: Positions per side at most: a larger image is pooled in squares first (a patch of at least twice
#: the square's side covers one square whole, so its colour stays its own).
PIXEL_SIDE = 32
#: Bins per channel of a position's colour (fewer where classes x positions x colours would exceed
#: ``PIXEL_BINS`` counts: a memory bound).
PIXEL_LEVELS = 8
PIXEL_BINS = 2**24
#: Half a grey level of an 8-bit image, in inputs scaled to [0, 1]: the least spread an input can be
#: said to have (:func:`settle`).
HALF_LEVEL = 0.5 / 255
#: Images read at a time while counting.
PIXEL_CHUNK = 4096


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
    #: For a group found by where it agrees with itself (:func:`settle`): the input dimensions of that
    #: support, the group's value there and the rest's standard deviation. ``axis`` is then unused.
    support: np.ndarray | None = None
    target: np.ndarray | None = None
    spread: np.ndarray | None = None
    #: For a group whose end the model's answers chose (:func:`sanitize.detect._obey.change_point`):
    #: (images that left the class with the pattern taken away, of the class; the change point's p).
    asked: tuple[int, int, float] | None = None
    #: -1 where the group is the rest of the class (:func:`sanitize.detect._obey.other_side`): the
    #: score is negated; ``sides`` then holds (the found group's rate, the rest's rate, Fisher's p).
    side: float = 1.0
    sides: tuple[float, float, float] | None = None

    def describe(self) -> str:
        """How the model's answers chose the group's side and end, where they did (else "")."""
        out = ""
        if self.sides is not None:
            own, other, p = self.sides
            out += f", the class's other side: its pattern turns {other:.1%} against the group's {own:.1%} (p {p:.2g})"
        if self.asked is not None:
            left, size, p = self.asked
            out += f", cut where the model's answers change ({left} of {size} left the class without it, p {p:.2g})"
        return out

    def score(self, centred: np.ndarray) -> np.ndarray:
        """Each sample's (rows of ``centred``, the class's inputs less its mean) score: in robust sd
        of the rest, higher = more like the group."""
        if self.support is None or self.target is None or self.spread is None:
            return self.side * (centred @ self.axis - self.centre) / self.scale
        return self.side * (self.centre - _distance(centred, self.support, self.target, self.spread)) / self.scale


def _upper(scores: np.ndarray) -> np.ndarray:
    """The positions of ``scores`` above their exact 2-means cut."""
    s = np.sort(scores)
    j = two_means_cut(s)
    return np.flatnonzero(scores > (s[j - 1] + s[j]) / 2)


def _against_rest(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, float, float, float, float] | None:
    """``scores`` in robust sd of the non-members from their median, with what is measured on it:
    (that score, the median, the sd, the members' median separation, the valley between). None when
    either side has under two samples."""
    inside = np.zeros(len(scores), dtype=bool)
    inside[members] = True
    if inside.sum() < 2 or (~inside).sum() < 2:
        return None
    rest = scores[~inside]
    centre = float(np.median(rest))
    scale = robust_sd(rest, centre, fallback=1.0)
    q = (scores - centre) / scale
    return q, centre, scale, float(np.median(q[inside])), valley_ratio(q[~inside], q[inside])


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
        found = _upper(scores)
        if np.array_equal(found, members):
            break
        members = found
    measured = _against_rest(scores, members)
    if measured is None:
        return None
    q, _, scale, separation, valley = measured
    inside = np.zeros(len(z), dtype=bool)
    inside[members] = True
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


def _distance(centred: np.ndarray, support: np.ndarray, target: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Log of the root mean square distance of each row to ``target`` over the ``support`` dimensions,
    each in units of its ``spread`` (a difference under half a grey level counts as half a level)."""
    gap = np.maximum(np.abs(centred[:, support] - target), HALF_LEVEL) / spread
    return 0.5 * np.log((gap**2).mean(axis=1))


def settle(centred: np.ndarray, start: np.ndarray, false_alarm: float) -> Refined | None:
    """The group a stamped patch makes in its class, found where the group agrees with itself: a patch
    is too small to move its images' mean far, but on the inputs it covers every poison holds one
    value while the class varies. The support is the input dimensions where the group's spread (a
    median absolute deviation, so that a stray member does not widen it; at least half a grey level,
    the inputs' resolution) is too small for a random draw of the class: ``(k-1) s^2 / var`` in the
    lower ``false_alarm / d`` tail of chi-square with ``k - 1`` degrees of freedom, Bonferroni over
    the ``d`` dimensions. Each sample is scored by its distance to the group's median there (in the
    rest's sd per dimension, on a log scale, where an exact copy and a near one are apart as far as
    a near one and the class); exact 2-means splits the scores, and the group above the cut is taken
    again until it settles. None when no dimension is in the support or no group of two remains."""
    members = np.sort(np.asarray(start, dtype=np.int64))
    m, d = centred.shape
    for _ in range(REFINE_ROUNDS):
        k = len(members)
        if k < 3 or k > m - 2:
            return None
        inside = np.zeros(m, dtype=bool)
        inside[members] = True
        group = centred[inside]
        target = np.median(group, axis=0)
        s = np.maximum(1.4826 * np.median(np.abs(group - target), axis=0), HALF_LEVEL)
        var = centred[~inside].var(axis=0, ddof=1)
        ok = var > HALF_LEVEL**2
        low = chi2.cdf((k - 1) * s[ok] ** 2 / var[ok], k - 1)
        support = np.flatnonzero(ok)[low <= false_alarm / d]
        if len(support) == 0:
            return None
        spread = np.sqrt(var[support])
        dist = _distance(centred, support, target[support], spread)
        found = _upper(-dist)
        if np.array_equal(found, members):
            break
        members = found
    measured = _against_rest(-dist, members)
    if measured is None:
        return None
    q, centre, scale, separation, valley = measured
    inside = np.zeros(m, dtype=bool)
    inside[members] = True
    # The last round's cut parted the members from the rest; cut midway between them.
    cut = (float(q[~inside].max()) + float(q[inside].min())) / 2
    return Refined(np.zeros(d), -centre, scale, members, separation, valley, cut, support, target[support], spread)


def _codes(images: np.ndarray, block: int, levels: int) -> np.ndarray:
    """Each image's colour code at each position (m, P): the image average-pooled over ``block`` x
    ``block`` squares, each channel cut into ``levels`` equal bins, the channels' bins as one code."""
    m, h, w, ch = images.shape
    oh, ow = h // block, w // block
    x = images[:, : oh * block, : ow * block, :].astype(np.float32)
    if block > 1:
        x = x.reshape(m, oh, block, ow, block, ch).mean(axis=(2, 4))
    q = np.minimum((x * (levels / 256.0)).astype(np.int64), levels - 1)
    code = np.zeros((m, oh, ow), dtype=np.int64)
    for k in range(ch):
        code = code * levels + q[..., k]
    return code.reshape(m, -1)


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
    block = max(1, -(-max(h, w) // PIXEL_SIDE))
    classes = sorted(least)
    levels = PIXEL_LEVELS
    while levels > 2 and len(classes) * (h // block) * (w // block) * levels**ch > PIXEL_BINS:
        levels //= 2
    codes_per_position = levels**ch
    positions = (h // block) * (w // block)
    counts = {c: np.zeros(positions * codes_per_position, dtype=np.int64) for c in classes}
    offsets = np.arange(positions, dtype=np.int64) * codes_per_position
    for start in range(0, n, PIXEL_CHUNK):
        rows = np.arange(start, min(n, start + PIXEL_CHUNK))
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
            [
                _codes(responder.images(rows_c[i : i + PIXEL_CHUNK]), block, levels)[:, wanted]
                for i in range(0, size, PIXEL_CHUNK)
            ]
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
    pattern the model obeys more is that rest (:func:`obeyed`). Returns, per searched
    class tested, (the group or None, the test)."""
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
            at = np.searchsorted(rows, cand.rows)
            group = refine(x[rows] - means[c], white_of(c), at)
            if group is None and cand.kind == "colour":  # a patch the matched filter parts no group of
                group = settle(x[rows] - means[c], at, false_alarm)
            if group is not None:
                group = obeyed(responder, labels, x[rows] - means[c], rows, group, least[c], rng, false_alarm)
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
