"""Input gap's splits: each direction's two-means split of a class, with its suspect side.

Private to :mod:`sanitize.detect`: :class:`~sanitize.detect.input_gap.InputGap` measures each split
(separation, valley, the group beyond the widest gap) and decides on them; the disowned route
(:func:`disowned_bar`) tests the side nearer the other classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from sanitize.detect._stats import mad_sd, robust_sd, split_1d, valley_ratio, widest_gap
from sanitize.detect.knn import knn_search

#: Fewest samples on either side of a split: a median and a spread need two (a guard, 5613a8c).
MIN_SIDE = 2
#: Fewest values to split in two at all (a guard, 5613a8c).
MIN_SPLIT_VALUES = 4


@dataclass(frozen=True)
class Split:
    """One direction's split of a class: the suspect group beyond ``cut`` along ``axis``."""

    key: tuple[bool, float]
    ok: bool
    axis: np.ndarray
    centre: float
    scale: float
    separation: float
    valley: float
    share: float
    cut: float
    count: int
    members: np.ndarray
    source: tuple[str, float] = ("", 1.0)
    dynamics: tuple[float, float] | None = None
    #: The first route that passed it: "separation", "source", "dynamics", "disowned" or "response"
    #: ("" for none).
    by: str = ""


def splits(centred: np.ndarray, axes: np.ndarray, offsets: np.ndarray | None) -> tuple[list[Split], list[Split]]:
    """The split of the (centred) samples along each of ``axes`` (d, k), measured from each side:
    (the suspect side farther from where the other classes sit along each direction, the side nearer
    them). ``offsets`` are the other classes' means minus this class's."""
    proj = centred @ axes
    others_at = np.median(offsets @ axes, axis=0) if offsets is not None else np.zeros(axes.shape[1])
    far: list[Split] = []
    near: list[Split] = []
    for j in range(proj.shape[1]):
        p = proj[:, j]
        cut = split_1d(p, MIN_SPLIT_VALUES)
        if cut is None:
            continue
        # The suspect side is the one farther from where the other classes sit along this
        # direction: a trigger moves poisons where no clean image goes, also when the poisons
        # outnumber the clean part of their class (dirty-label poisoning at 10 %).
        above = p > cut
        med_above, med_below = float(np.median(p[above])), float(np.median(p[~above]))
        sign = 1.0 if abs(med_above - others_at[j]) >= abs(med_below - others_at[j]) else -1.0
        for side, out in ((sign, far), (-sign, near)):
            found = _side(p, above if side > 0 else ~above, side, axes[:, j])
            if found is not None:
                out.append(found)
    return far, near


def _side(p: np.ndarray, inside: np.ndarray, sign: float, axis: np.ndarray) -> Split | None:
    """The split of projections ``p`` whose suspect side is ``inside``, measured along ``sign * axis``;
    None when either side has under ``MIN_SIDE`` samples."""
    size, count = len(p), int(inside.sum())
    if count < MIN_SIDE or count > size - MIN_SIDE:
        return None
    q = sign * p
    rest = q[~inside]
    centre = float(np.median(rest))
    scale = robust_sd(rest, centre, fallback=1.0)
    sep = (float(np.median(q[inside])) - centre) / scale
    valley = valley_ratio((rest - centre) / scale, (q[inside] - centre) / scale)
    cut_at = widest_gap((np.sort(q) - centre) / scale, 0.0, sep)
    members = np.flatnonzero((q - centre) / scale >= cut_at)
    return Split((False, sep), False, sign * axis, centre, scale, sep, valley, count / size, cut_at, count, members)


#: Input neighbours asked of each sample for the disowned route: the input-neighbours voter's ``k``.
DISOWN_K = 30


def disowned_shares(x: np.ndarray, labels: np.ndarray, k: int = DISOWN_K) -> np.ndarray:
    """Each sample's share (n,) of its ``k`` nearest inputs (L2) that carry another label."""
    _, neighbours = knn_search(np.ascontiguousarray(x, dtype=np.float32), min(k, len(x) - 1))
    return (labels[neighbours] != labels[:, None]).mean(axis=1)


def contrast(shares: np.ndarray, members: np.ndarray) -> float:
    """How much more the group (``members``, positions in the class whose ``shares`` these are) is
    disowned by its input neighbours than the rest of its class: the difference of the mean shares."""
    inside = np.zeros(len(shares), dtype=bool)
    inside[members] = True
    if inside.all() or not inside.any():
        return 0.0
    return float(shares[inside].mean() - shares[~inside].mean())


def disowned_bar(null: list[float], alpha: float, k: int = DISOWN_K) -> float:
    """The contrast a group must reach: the ``1 - alpha`` quantile of a normal fitted robustly (median,
    MAD) to ``null``, the contrasts that the nearer sides of the other classes' splits give. Its spread
    is at least ``1 / k``, the step of one sample's share: a physical bound on a null whose values
    happen to agree (colour images, whose pixels' neighbours disown nearly every image alike)."""
    if len(null) < 3:
        return np.inf
    values = np.asarray(null, dtype=np.float64)
    centre = float(np.median(values))
    return centre + float(norm.isf(alpha)) * max(mad_sd(values, centre), 1.0 / k)
