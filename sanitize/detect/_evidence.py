"""Evidence about a group of samples beyond its place in the data: where it came from and how the
model learnt it. Each function is a test with a stated false-alarm rate; input gap uses them to
decide groups its separation alone leaves open. Private to :mod:`sanitize.detect`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.stats import hypergeom, norm, poisson
from scipy.stats import t as student_t

from sanitize.detect._stats import mad_sd

#: Smallest spread (sd of ``log(1 + fall)``) the other classes' falls may have as a null: a bound on a
#: null of a few classes whose values happen to agree, so the bar is not set by their rounding.
FALL_NULL_MIN_SD = 0.1


def source_concentration(sources: np.ndarray, members: np.ndarray) -> tuple[str, float]:
    """The source most over-represented in a group (``members``, indices into the class's
    ``sources``) and the chance of so many of the group coming from it if the group were drawn from
    the class at random (hypergeometric upper tail), times the class's number of sources (Bonferroni
    over which source it is). ("", 1.0) for a class with one source, where it says nothing."""
    names, counts = np.unique(sources.astype(str), return_counts=True)
    if len(names) < 2 or len(members) == 0:
        return "", 1.0
    in_group = dict(zip(*np.unique(sources[members].astype(str), return_counts=True), strict=True))
    best = ("", 1.0)
    for name, total in zip(names, counts, strict=True):
        k = int(in_group.get(name, 0))
        if k == 0:
            continue
        p = float(hypergeom.sf(k - 1, len(sources), int(total), len(members))) * len(names)
        if p < best[1]:
            best = (str(name), min(p, 1.0))
    return best


#: Largest share of its class a group may be for the training-loss test: a group that is most of its
#: class is the class (its median is the class's), and against random groups of that size any small
#: difference is "significant" (72 % of a clean digits class, p 0.0014, in a test of tests/test_versions.py).
#: It does not stop every natural group: Fashion-MNIST's bags split into a cluster of 48.6 % that fell
#: 2.92 (p 0.005), and whitened clustering quarantined 3,028 clean bags on SIG 0.5 % (bench/RESULTS.md).
MINORITY = 0.5

#: Fewest random groups drawn for the loss-crossing permutation test: 199, so that the smallest
#: p-value, 1/200, is under a false-alarm rate of 1 %.
MIN_PERMUTATIONS = 199


def relative_log_loss(losses: np.ndarray) -> np.ndarray:
    """Each sample's log training loss (n, E) less its class's median in the same epoch: how much
    harder (above 0) or easier than its class the model found it, epoch by epoch. ``losses`` are one
    class's; a sample missing from an epoch (NaN) counts as the class's median there."""
    logs = np.log(np.maximum(losses, 1e-8))
    rel = logs - np.nanmedian(logs, axis=0, keepdims=True)
    return np.nan_to_num(rel, nan=0.0)


def crossing(curve: np.ndarray) -> float:
    """How far a curve (E,) of relative log loss fell to a point easier than its class: the largest
    ``curve[e] - curve[f]`` over ``e < f`` with ``curve[f] < 0``; 0 where it never fell under its
    class's median. Poisons fall far under it, whether the model found them hard first (a trigger on
    images of other classes, learnt late) or learnt them first (ABL's observation); a group harder
    than its class throughout never counts, whatever its noise."""
    return float(crossings(curve[None, :])[0])


def crossings(rel: np.ndarray) -> np.ndarray:
    """:func:`crossing` of each row of ``rel`` (n, E)."""
    if rel.shape[1] < 2:
        return np.zeros(len(rel))
    highest = np.maximum.accumulate(rel, axis=1)[:, :-1]  # the highest point before each epoch
    later = rel[:, 1:]
    fall = np.where(later < 0, highest - later, 0.0)
    return np.maximum(fall.max(axis=1), 0.0)


def loss_crossing(
    rel: np.ndarray, members: np.ndarray, rng: np.random.Generator, alpha: float = 0.01
) -> tuple[float, float]:
    """How far a group's median relative log loss (``rel``, the class's (n, E)) fell from its highest
    to a later low (:func:`crossing`), and the permutation p-value of so large a fall among random
    groups of the class of the same size: enough of them (at least :data:`MIN_PERMUTATIONS`) that
    a p-value of twice the smallest is under the level ``alpha`` it will be held to.

    Dirty-label poisons carry images of other classes: the model first finds them hard (their label
    disagrees with their content), then learns the trigger and finds them easier than their class
    (ABL, Li et al., NeurIPS 2021: poisons are learnt fast once learnt). Natural groups stay harder
    (digits' "1"s apart: p 0.19-0.97 on the runs measured) or easier throughout."""
    drop = crossing(np.median(rel[members], axis=0))
    k, n = len(members), len(rel)
    draws = max(MIN_PERMUTATIONS, int(np.ceil(2.0 / alpha)) - 1)
    null = np.array([crossing(np.median(rel[rng.choice(n, k, replace=False)], axis=0)) for _ in range(draws)])
    return drop, float((1 + (null >= drop).sum()) / (draws + 1))


def group_fall(rel: np.ndarray, members: np.ndarray) -> float:
    """:func:`crossing` of a group's median relative log loss (``rel``, its class's (n, E))."""
    return crossing(np.median(rel[members], axis=0)) if len(members) else 0.0


def beyond_other_classes(fall: float, others: list[float], alpha: float) -> tuple[float, bool]:
    """Whether a group's fall is beyond what the other classes' own groups show: beyond the highest of
    them, and beyond the ``1 - alpha`` quantile of a log-normal fitted (median, MAD) to their
    ``log(1 + fall)``: the dataset's null of how far a natural group's loss falls (every class has
    groups the model finds easy; on Fashion-MNIST the bags' natural group fell 1.67, under the shirts'
    1.83, while the robust log-normal's quantile alone, 1.52, would have let it pass). Returns (the
    bar, whether ``fall`` reaches it); with no other class, (inf, False)."""
    if not others:
        return float("inf"), False
    logs = np.log1p(np.asarray(others, dtype=np.float64))
    centre = float(np.median(logs))
    spread = max(mad_sd(logs, centre), FALL_NULL_MIN_SD)
    bar = max(float(np.expm1(centre + float(norm.isf(alpha)) * spread)), max(others))
    return bar, fall > bar


def clusters_by_dynamics(
    losses: np.ndarray,
    labels: np.ndarray,
    members: dict[int, np.ndarray],
    tested: list[int],
    rng: np.random.Generator,
    false_alarm: float,
    *,
    against_others: bool = True,
) -> dict[int, tuple[float, float, bool]]:
    """Each ``tested`` class's suspect cluster (``members[c]``, a boolean mask over the class) judged
    by the training losses (n, E): (its fall, the permutation p-value of :func:`loss_crossing`, and
    whether it passed: p at most ``false_alarm`` over the classes tested and, with ``against_others``,
    a fall beyond every class's suspect cluster's, :func:`beyond_other_classes`; the natural
    sub-population of Fashion-MNIST's bags fell 1.6 against random groups, p 0.005, but the shirts'
    fell 1.9 too).

    A caller that next asks the reference model whether the cluster carries a pattern it obeys (the
    response test, at its own stated rate) passes ``against_others=False``: that test tells a natural
    cluster from a trigger's, where the other classes' falls can only compare one natural cluster with
    another. Beside it, the bar of the highest other fall drops poisons whose fall merely ties a
    natural cluster's (bench/RESULTS.md, issue 15 "Twelfth step": a 3x3 frame on 64x64 colour
    Fashion-MNIST, whose 12-image cluster fell 7.44 against another class's 7.52, and whose pattern
    turns 68.5 % of other classes' images where the rivals' turn at most 5.2 %)."""
    alpha = false_alarm / max(len(tested), 1)
    rels = {c: relative_log_loss(losses[labels == c]) for c in members}
    falls = {c: group_fall(rels[c], np.flatnonzero(members[c])) for c in members}
    out: dict[int, tuple[float, float, bool]] = {}
    for c in tested:
        drop, p = loss_crossing(rels[c], np.flatnonzero(members[c]), rng, alpha)
        beyond = True
        if against_others:
            _, beyond = beyond_other_classes(falls[c], [f for o, f in falls.items() if o != c], false_alarm)
        out[c] = (drop, p, p <= alpha and beyond)
    return out


#: Points of the predictive distribution over which :func:`count_beyond_other_classes` averages: its
#: p-values are resolved to 2e-4, a fifth of the 1e-3 that a 5 % rate over 50 classes asks for.
PREDICTIVE_POINTS = 5_000


@lru_cache(maxsize=64)
def _t_points(df: int) -> np.ndarray:
    """:data:`PREDICTIVE_POINTS` evenly spaced quantiles of Student's t with ``df`` degrees of freedom."""
    return np.asarray(student_t.ppf((np.arange(PREDICTIVE_POINTS) + 0.5) / PREDICTIVE_POINTS, df))


def _predictive(others: np.ndarray) -> tuple[float, float, int]:
    """The predictive Student t of one more draw from the normal sample ``others``: (centre, scale,
    degrees of freedom) = (mean, ``sd * sqrt(1 + 1/m)``, ``m - 1``) for ``m`` values: exact under the
    normal, and wide when there are few values to learn the spread from."""
    m = len(others)
    return float(others.mean()), float(others.std(ddof=1)) * float(np.sqrt(1.0 + 1.0 / m)), m - 1


def value_beyond_other_classes(values: np.ndarray, label: int) -> float:
    """The p-value of class ``label``'s positive ``values[label]`` (a separation, a spread) being so
    high, were it one more draw of the other classes' natural logs, taken as a normal sample (the
    predictive t of :func:`_predictive`). Other classes' values that are not positive (no split) are
    left out; with fewer than two left there is no spread to learn, and p is 1. A caller holds p to its
    rate over the classes (Bonferroni)."""
    values = np.asarray(values, dtype=np.float64)
    others = np.delete(values, label)
    others = np.log(others[others > 0])
    if len(others) < 2 or values[label] <= 0:
        return 1.0
    centre, scale, df = _predictive(others)
    if scale <= 0:
        return 0.0 if np.log(values[label]) > centre else 1.0
    return float(student_t.sf((np.log(values[label]) - centre) / scale, df))


def count_beyond_other_classes(counts: np.ndarray, sizes: np.ndarray, label: int) -> tuple[float, float, float]:
    """Whether class ``label`` holds more of something (``counts``, per class, out of ``sizes``)
    than the other classes let one expect: the p-value of a count so high or higher, and the centre
    and spread of the null (natural log of the share).

    The null is the dataset's own: the other classes' log shares, ``log((count + 0.5) / (size + 1))``,
    taken as a sample of a normal (classes differ in how much of it they hold naturally). A new class's
    log share then follows the predictive Student t with ``m - 1`` degrees of freedom, centred on their
    mean with scale ``sd * sqrt(1 + 1/m)`` (``m`` other classes: exact under the normal, and wide when
    there are few classes to learn the spread from), and its count is Poisson at that share times its
    size (for classes whose counts are a handful, where the log share alone would be noise). The
    p-value is the upper tail of that mixture at the class's count; a caller holds it to its rate over
    the classes (Bonferroni). With fewer than two other classes there is no spread to learn: p is 1."""
    counts = np.asarray(counts, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    logs = np.log((counts + 0.5) / (sizes + 1.0))
    others = np.delete(logs, label)
    m = len(others)
    if m < 2:
        return 1.0, float("nan"), float("nan")
    centre, scale, _ = _predictive(others)
    spread = float(others.std(ddof=1))
    # A share is at most 1: the log is capped at 0 (which also keeps a heavy tail of few classes finite).
    shares = np.exp(np.minimum(centre + scale * _t_points(m - 1), 0.0))
    expected = shares * sizes[label]
    p = float(poisson.sf(counts[label] - 1, expected).mean())
    return p, centre, spread


def check_side_inputs(
    n: int, groups: np.ndarray | None, dynamics: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A detector's side inputs checked and converted: sources (n,) and training dynamics (n, E)."""
    if groups is not None and len(groups) != n:
        raise ValueError(f"{len(groups)} sources for {n} samples")
    if dynamics is not None and (dynamics.ndim != 2 or len(dynamics) != n):
        raise ValueError(f"training dynamics of shape {dynamics.shape} for {n} samples (expected (n, epochs))")
    g = None if groups is None else np.asarray(groups, dtype=object)
    d = None if dynamics is None or dynamics.shape[1] < 2 else np.asarray(dynamics, dtype=np.float64)
    return g, d
