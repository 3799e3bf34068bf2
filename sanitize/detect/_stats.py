"""Statistics that several detectors share: robust scale, whitening, the leave-one-class-out
yardstick, the valley between two clusters, exact 1-D 2-means and a deterministic MCD.

Private to :mod:`sanitize.detect`; each function is pinned by the detectors' tests.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import chi2

#: The MAD times this estimates the standard deviation of Gaussian data: 1 / Phi^-1(3/4) = 1.4826.
#: Every "robust standard deviation" in the detectors is this times the median absolute deviation.
MAD_TO_SD = 1.4826

#: Eigenvalues of a covariance are raised to at least this share of the largest before whitening, so
#: directions that never vary (black border pixels) weigh heavily but finitely. Set with the first
#: whitened detector (ba5c40b) and not tuned; input gap's pixel covariances use it too
#: (bench/RESULTS.md, "The second voter, input gap").
EIGENVALUE_FLOOR = 1e-6

#: Stands in for a scale of zero (values that do not vary at all), so that what is divided by it stays finite.
TINY = 1e-12


def mad_sd(x: np.ndarray, centre: float) -> float:
    """``MAD_TO_SD`` x the median absolute deviation of ``x`` (n,) from ``centre``."""
    return float(MAD_TO_SD * np.median(np.abs(x - centre)))


def robust_sd(x: np.ndarray, centre: float, fallback: float) -> float:
    """:func:`mad_sd`, or the standard deviation where more than half of ``x`` sits at ``centre``,
    or ``fallback`` where ``x`` does not vary at all."""
    return mad_sd(x, centre) or float(np.std(x)) or fallback


def whitener(covariance: np.ndarray, floor: float) -> np.ndarray:
    """W (d, d) with ``W.T @ covariance @ W`` = I: eigenvectors over root eigenvalues, the eigenvalues
    raised to at least ``floor`` x the largest so directions that never vary weigh heavily but finitely."""
    w, v = np.linalg.eigh(covariance)
    w = np.maximum(w, max(float(w.max()), TINY) * floor)
    return v / np.sqrt(w)


def shrunk_whitener(covariance: np.ndarray, n_samples: int) -> np.ndarray:
    """W (d, d) whitening the covariance shrunk towards a multiple of the identity by the Oracle
    Approximating Shrinkage (Chen et al., IEEE TSP 2010), whose weight is set by the covariance
    itself and the ``n_samples`` it came from: a matched filter fitted to a few images then does not
    lean on directions the estimate got wrong (0.7 % on the emoji's 768 pooled pixels from 1,800
    images; all of it for white noise, where the identity is the truth)."""
    d = covariance.shape[0]
    trace = float(np.trace(covariance))
    trace_sq = float(np.sum(covariance * covariance))
    spread = trace_sq - trace**2 / d
    rho = 1.0
    if spread > TINY:
        rho = min(1.0, ((1 - 2 / d) * trace_sq + trace**2) / ((n_samples + 1 - 2 / d) * spread))
    shrunk = (1 - rho) * covariance + rho * (trace / d) * np.eye(d)
    w, v = np.linalg.eigh(shrunk)
    return v / np.sqrt(np.maximum(w, max(float(w.max()), TINY) * EIGENVALUE_FLOOR))


def class_scatters(
    x: np.ndarray, labels: np.ndarray, classes: list[int]
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], np.ndarray]:
    """Each class's mean (d,) and scatter about it (d, d), keyed by class, and the scatters' sum (d, d)."""
    means: dict[int, np.ndarray] = {}
    scatters: dict[int, np.ndarray] = {}
    for c in classes:
        xc = x[labels == c]
        means[c] = xc.mean(axis=0)
        centred = xc - means[c]
        scatters[c] = centred.T @ centred
    total: np.ndarray = sum(scatters.values())  # type: ignore[assignment]
    return means, scatters, total


def others_covariance(total: np.ndarray, own: np.ndarray, n_others: int, n_other_classes: int) -> np.ndarray:
    """The within-class covariance (d, d) pooled over every class but one (SCAn's yardstick, which a
    poisoned class cannot inflate): the scatter of all classes, ``total``, less the class's ``own``,
    over the other classes' degrees of freedom (``n_others`` samples less one per class)."""
    return (total - own) / max(n_others - n_other_classes, 1)


def two_means_cut(sorted_values: np.ndarray) -> int:
    """Exact 2-means of sorted 1-D values (n >= 2): the cut ``k`` (1 <= k < n) that puts
    ``sorted_values[:k]`` and ``[k:]`` in two groups with the least within-group sum of squares."""
    n = len(sorted_values)
    cum, cum_sq = np.cumsum(sorted_values), np.cumsum(sorted_values * sorted_values)
    k = np.arange(1, n)
    low = cum_sq[:-1] - cum[:-1] ** 2 / k
    high = (cum_sq[-1] - cum_sq[:-1]) - (cum[-1] - cum[:-1]) ** 2 / (n - k)
    return int(np.argmin(low + high)) + 1


# The valley's histogram, set with whitened clustering's gap test on Fashion-MNIST's Blend runs
# (aa6989f; bench/RESULTS.md, "How the voter's thresholds were set"): about sqrt(n) bins between the
# clusters' medians, at least 8 so a gap has room and at most 24 so a bin of a 60k class still holds
# enough samples; counts smoothed over 3 bins; the 2 bins at either end are the clusters themselves,
# and the suspect cluster's density is the mean of the 3 bins below its median.
VALLEY_MIN_BINS, VALLEY_MAX_BINS = 8, 24
VALLEY_SMOOTHING = 3
VALLEY_EDGE_BINS = 2
VALLEY_PEAK_BINS = 3


def valley_ratio(clean: np.ndarray, suspect: np.ndarray) -> float:
    """How empty the space between two clusters is, on their projections onto the line joining them.

    ``clean`` and ``suspect`` are positions with the clean cluster's median at 0 and the suspect one's
    ``m > 0`` higher. The segment ``[0, m]`` is cut into ``clip(sqrt(n), 8, 24)`` bins; with counts
    smoothed over three bins, the result is the emptiest bin strictly inside (two bins from either
    end) over the mean of the three bins below ``m``. About 0 when a gap parts two populations; near
    or above 1 when a class tails off into a second cluster that 2-means cut out of a continuum.
    """
    return valley(clean, suspect)[0]


def valley(clean: np.ndarray, suspect: np.ndarray) -> tuple[float, float]:
    """:func:`valley_ratio` and where the valley is: (ratio, the emptiest bin's centre); (1.0, nan)
    when the suspect cluster does not lie above the clean one."""
    everything = np.concatenate([clean, suspect])
    top = float(np.median(suspect))
    if not np.isfinite(top) or top <= 0:
        return 1.0, float("nan")
    bins = int(np.clip(round(math.sqrt(len(everything))), VALLEY_MIN_BINS, VALLEY_MAX_BINS))
    edges = np.linspace(0.0, top, bins + 1)
    counts, _ = np.histogram(everything, bins=edges)
    smooth = np.convolve(counts, np.ones(VALLEY_SMOOTHING) / VALLEY_SMOOTHING, mode="same")
    peak = float(smooth[-VALLEY_PEAK_BINS:].mean())
    inner = smooth[VALLEY_EDGE_BINS:-VALLEY_EDGE_BINS]
    at = VALLEY_EDGE_BINS + int(np.argmin(inner))
    centre = float(0.5 * (edges[at] + edges[at + 1]))
    return (float(inner.min() / peak) if peak > 0 else 1.0), centre


# The MCD's standard choices (Rousseeuw and Van Driessen 1999): concentration steps until the subset
# stops changing (50 is a bound, never reached on the runs measured), and reweighting at chi-square's
# 97.5 % quantile.
MCD_MAX_STEPS = 50
MCD_REWEIGHT_QUANTILE = 0.975


def deterministic_mcd(
    z: np.ndarray, *, support_fraction: float, max_steps: int = MCD_MAX_STEPS
) -> tuple[np.ndarray, np.ndarray]:
    """Minimum covariance determinant location (k,) and covariance (k, k) of ``z`` (n, k), from
    deterministic starts (the idea of DetMCD, Hubert, Rousseeuw and Verdonck 2012).

    Each start picks the ``h = support_fraction * n`` rows closest to a robust first guess (the
    coordinatewise median, Euclidean; the classical estimate, Mahalanobis; the spatial-sign
    covariance about the median, Mahalanobis), then concentration steps (Rousseeuw and Van Driessen
    1999) keep the ``h`` rows closest under their own mean and covariance until the subset stops
    changing; the subset with the smallest determinant wins. Its covariance is scaled to be
    consistent at the normal (the median squared distance over chi-square's median), and the
    estimate is then recomputed from the rows within chi-square's 97.5 % (reweighting). Where
    scikit-learn's ``MinCovDet`` draws 500 random starts, three deterministic ones cost a few
    milliseconds per class and tolerate as many outliers when they form a group, as poisons do.
    """
    n, k = z.shape
    h = max(k + 1, int(np.ceil(support_fraction * n)))
    median = np.median(z, axis=0)

    def closest(centre: np.ndarray, cov: np.ndarray | None) -> np.ndarray:
        diff = z - centre
        d2 = (diff**2).sum(axis=1) if cov is None else np.einsum("ij,ij->i", diff @ np.linalg.pinv(cov), diff)
        return np.argsort(d2, kind="stable")[:h]

    signs = (z - median) / np.maximum(np.linalg.norm(z - median, axis=1, keepdims=True), TINY)
    starts = [closest(median, None), closest(z.mean(axis=0), np.cov(z.T)), closest(median, signs.T @ signs / n)]
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for subset in starts:
        for _ in range(max_steps):
            mu, cov = z[subset].mean(axis=0), np.cov(z[subset].T)
            nxt = np.sort(closest(mu, cov))
            if np.array_equal(nxt, np.sort(subset)):
                break
            subset = nxt
        sign, logdet = np.linalg.slogdet(cov)
        score = logdet if sign > 0 else np.inf  # a degenerate subset is no estimate
        if best is None or score < best[0]:
            best = (score, mu, cov)
    assert best is not None
    _, mu, cov = best
    diff = z - mu
    d2 = np.einsum("ij,ij->i", diff @ np.linalg.pinv(cov), diff)
    cov = cov * float(np.median(d2) / chi2.ppf(0.5, k))
    # Reweighting: the classical estimate of every row within chi-square's 97.5 % of the raw one.
    inside = d2 * float(chi2.ppf(0.5, k) / np.median(d2)) <= chi2.ppf(MCD_REWEIGHT_QUANTILE, k)
    if inside.sum() > k:
        mu, cov = z[inside].mean(axis=0), np.cov(z[inside].T)
    return mu, cov


def split_1d(p: np.ndarray, min_values: int) -> float | None:
    """The cut of exact 2-means on 1-D values (None when they cannot be split: fewer than
    ``min_values``, or all equal)."""
    s = np.sort(p)
    if len(s) < min_values or s[0] == s[-1]:
        return None
    k = two_means_cut(s)
    return float((s[k - 1] + s[k]) / 2)


def widest_gap(sorted_q: np.ndarray, low: float, high: float) -> float:
    """Middle of the widest stretch between consecutive values in ``(low, high)``: where to cut."""
    inside = sorted_q[(sorted_q > low) & (sorted_q < high)]
    points = np.concatenate([[low], inside, [high]])
    j = int(np.argmax(np.diff(points)))
    return float((points[j] + points[j + 1]) / 2)
