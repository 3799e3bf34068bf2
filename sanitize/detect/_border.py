"""Where a confirmed group ends: the scores that part a trigger's group from the rest of its class.

The response test (:mod:`sanitize.detect._trigger`) says that a class's candidate group carries a
pattern the model obeys; what remains is which images of the class carry it too. Two ways, by the
kind of trigger:

- an additive pattern (a blend, a sinusoid) moves every poison the same way in input space: the
  group's own mean difference, whitened, is a matched filter for it (:func:`refine`);
- a stamped patch is too small to move an image's mean far, but on the pixels it covers every poison
  holds one value while the class varies. The support is where the group's spread is too small for a
  random draw of the class (chi-square, at a stated false-alarm rate), and each image is scored by its
  distance to the group there. On the images as the pixel candidates saw them (:func:`settle_on_images`)
  a 3x3 patch keeps its own pixels; in the pooled inputs of the input-space voters it is averaged with
  the image around it (:func:`settle`, the fallback).

Private to :mod:`sanitize.detect`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from sanitize.detect._response import Responder
from sanitize.detect._stats import robust_sd, two_means_cut, valley_ratio, widest_gap
from sanitize.errors import DetectionError

#: Most rounds of a group's refinement (the emoji SIG group settled after one).
REFINE_ROUNDS = 4
#: Half a grey level of an 8-bit image, in inputs scaled to [0, 1]: the least spread an input can be
#: said to have (:func:`settle`).
HALF_LEVEL = 0.5 / 255
#: Positions per side at most: a larger image is pooled in squares first (a patch of at least twice
#: the square's side covers one square whole, so its colour stays its own).
PIXEL_SIDE = 32
#: Images read at a time.
CHUNK = 4096


def block_of(height: int, width: int) -> int:
    """The side of the squares an image is average-pooled over so that at most ``PIXEL_SIDE``
    positions remain per side (1: the image as it is)."""
    return max(1, -(-max(height, width) // PIXEL_SIDE))


def pool(images: np.ndarray, block: int) -> np.ndarray:
    """Images (m, H, W, C) average-pooled over ``block`` x ``block`` squares: (m, H // block, W // block, C)
    float32 in grey levels (a last partial row or column of squares is dropped)."""
    m, h, w, ch = images.shape
    oh, ow = h // block, w // block
    x = images[:, : oh * block, : ow * block, :].astype(np.float32)
    if block > 1:
        x = x.reshape(m, oh, block, ow, block, ch).mean(axis=(2, 4))
    return x


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
    #: For a group found on the class's images rather than its inputs (:func:`settle_on_images`): each
    #: image's score, in the class's order. The inputs do not carry the pixels it was read from, so it
    #: scores those images only.
    fitted: np.ndarray | None = None

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
        of the rest, higher = more like the group. A group found on the images (``fitted``) scores
        the class's fitted rows only."""
        if self.fitted is not None:
            if len(centred) != len(self.fitted):
                raise DetectionError(
                    f"this group was found on the images of its class's {len(self.fitted)} fitted samples and "
                    f"scores only them, not {len(centred)} others"
                )
            return self.side * self.fitted
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


def _distance(
    centred: np.ndarray,
    support: np.ndarray | slice,
    target: np.ndarray,
    spread: np.ndarray,
    floor: float = HALF_LEVEL,
) -> np.ndarray:
    """Log of the root mean square distance of each row to ``target`` over the ``support`` dimensions,
    each in units of its ``spread`` (a difference under half a grey level, ``floor`` in the rows'
    units, counts as half a level)."""
    gap = np.maximum(np.abs(centred[:, support] - target), floor) / spread
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
    m, d = centred.shape
    last: dict[str, np.ndarray] = {}

    def score(members: np.ndarray) -> np.ndarray | None:
        inside = np.zeros(m, dtype=bool)
        inside[members] = True
        group = centred[inside]
        target = np.median(group, axis=0)
        s = np.maximum(1.4826 * np.median(np.abs(group - target), axis=0), HALF_LEVEL)
        var = centred[~inside].var(axis=0, ddof=1)
        support = _agreeing(len(members), s**2, var, var > HALF_LEVEL**2, false_alarm)
        if len(support) == 0:
            return None
        last.update(support=support, target=target[support], spread=np.sqrt(var[support]))
        return _distance(centred, support, last["target"], last["spread"])

    found = _settle_rounds(m, start, score)
    if found is None:
        return None
    members, (_, centre, scale, separation, valley, cut) = found
    return Refined(
        np.zeros(d), -centre, scale, members, separation, valley, cut, last["support"], last["target"], last["spread"]
    )


def _settle_rounds(
    m: int, start: np.ndarray, score: Callable[[np.ndarray], np.ndarray | None]
) -> tuple[np.ndarray, tuple[np.ndarray, float, float, float, float, float]] | None:
    """From ``start`` (positions among ``m``), score every position by its distance to the group
    (``score(members)``, None: no support), take the group below the exact 2-means cut of the distances,
    and repeat until it settles (at most ``REFINE_ROUNDS``). The group and what :func:`_settled`
    measures on its last distances; None where no support is left, or no group of three (or no rest
    of two)."""
    members = np.sort(np.asarray(start, dtype=np.int64))
    dist = np.zeros(m)
    for _ in range(REFINE_ROUNDS):
        if len(members) < 3 or len(members) > m - 2:
            return None
        scored = score(members)
        if scored is None:
            return None
        dist, found = scored, _upper(-scored)
        if np.array_equal(found, members):
            break
        members = found
    settled = _settled(dist, members)
    return None if settled is None else (members, settled)


def _agreeing(k: int, s2: np.ndarray, var: np.ndarray, ok: np.ndarray, false_alarm: float) -> np.ndarray:
    """The dimensions (of those ``ok``) where a group of ``k`` whose spread is ``s2`` agrees with itself
    too well for a random draw of a class of variance ``var``: ``(k-1) s2 / var`` in the lower
    ``false_alarm / d`` tail of chi-square with ``k - 1`` degrees of freedom, Bonferroni over the ``d``."""
    low = chi2.cdf((k - 1) * s2[ok] / var[ok], k - 1)
    return np.flatnonzero(ok)[low <= false_alarm / len(var)]


def _settled(dist: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, float, float, float, float, float] | None:
    """The scores ``-dist`` against the rest (:func:`_against_rest`: q, centre, scale, separation,
    valley) and the cut: the last round's 2-means parted the members from the rest, so midway between."""
    measured = _against_rest(-dist, members)
    if measured is None:
        return None
    q, centre, scale, separation, valley = measured
    inside = np.zeros(len(dist), dtype=bool)
    inside[members] = True
    cut = (float(q[~inside].max()) + float(q[inside].min())) / 2
    return q, centre, scale, separation, valley, cut


def class_pixels(responder: Responder, rows: np.ndarray) -> np.ndarray:
    """The training images at ``rows`` as the pixel candidates see them (pooled to at most
    ``PIXEL_SIDE`` positions per side, :func:`block_of`), one row each: (m, d) uint8 grey levels, the
    pooled means rounded (half a level, the least spread :func:`settle_on_images` counts)."""
    first = responder.images(rows[:1])
    block = block_of(*first.shape[1:3])
    out = []
    for start in range(0, len(rows), CHUNK):
        pooled = pool(responder.images(rows[start : start + CHUNK]), block)
        out.append(np.rint(pooled).astype(np.uint8).reshape(len(pooled), -1))
    return np.concatenate(out) if out else np.zeros((0, first[0].size // block**2), np.uint8)


def settle_on_images(
    responder: Responder, rows: np.ndarray, start: np.ndarray, false_alarm: float, dims: int
) -> Refined | None:
    """:func:`settle` on the class's images (``rows``, global) as the pixel candidates saw them
    (:func:`class_pixels`), from ``start`` (positions in ``rows``), for a group of one colour at one
    position that the model confirmed.

    The support is where the group's sample variance ``s^2`` is too small for a random draw of the
    class: ``(k-1) s^2 / var`` in the lower ``false_alarm / d`` tail of chi-square with ``k - 1``
    degrees of freedom (the law of the sample variance, so the sample variance is what is tested:
    a median absolute deviation of a dozen images is often near 0 by chance, and let 19 background
    pixels of an icons class into a 3x3 frame's support). The rest is as :func:`settle`. The scores
    are those of the class's images (``fitted``), since the inputs the voter scores are pooled further;
    ``dims`` is the inputs' width, for the unused ``axis``. bench/RESULTS.md, issue 15 "Twelfth step":
    a 3x3 frame on 2,004 icons, 48 poisons in a class of 382: 65 quarantined with all 48 (the matched
    filter's group on the pooled inputs, 217 with 36); a 3x3 noise patch on emoji, 39 poisons: 43 with
    all 39 (156 with 38)."""
    x = class_pixels(responder, rows)
    m, d = x.shape
    total, total_sq = np.zeros(d), np.zeros(d)
    for i in range(0, m, CHUNK):
        part = x[i : i + CHUNK].astype(np.float64)
        total += part.sum(axis=0)
        total_sq += (part**2).sum(axis=0)
    half = 0.5  # half a grey level: the least spread a pixel can be said to have

    def score(members: np.ndarray) -> np.ndarray | None:
        k, group = len(members), x[members].astype(np.float64)
        s2 = np.maximum(group.var(axis=0, ddof=1), half**2)
        rest_sum = total - group.sum(axis=0)
        var = np.maximum((total_sq - (group**2).sum(axis=0) - rest_sum**2 / (m - k)) / (m - k - 1), 0.0)
        support = _agreeing(k, s2, var, var > half**2, false_alarm)
        if len(support) == 0:
            return None
        target = np.median(group[:, support], axis=0)
        return _distance(x[:, support].astype(np.float64), slice(None), target, np.sqrt(var[support]), half)

    found = _settle_rounds(m, start, score)
    if found is None:
        return None
    members, (q, centre, scale, separation, valley, cut) = found
    return Refined(np.zeros(dims), -centre, scale, members, separation, valley, cut, fitted=q)
