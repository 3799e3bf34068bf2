"""SPECTRE (Hayase, Kong, Somani and Oh, "SPECTRE: Defending Against Backdoor Attacks Using Robust
Statistics", ICML 2021)."""

from __future__ import annotations

from typing import Self

import numpy as np
from scipy.stats import chi2

from sanitize.detect.base import Detector
from sanitize.detect.whitened import valley, whitener


class Spectre(Detector):
    """Robust whitening then quantum-entropy (QUE) outlier scores, per class.

    Per class: project the centred features on their top ``n_components`` singular directions;
    estimate the mean and covariance robustly (minimum covariance determinant, which tolerates up
    to half the class being poisons, where the paper uses a filter that needs the poison rate);
    whiten with them; and score each whitened row ``x`` by
    ``x^T Q x / tr(Q)`` with ``Q = exp(alpha (S - I) / (||S||_2 - 1))`` and ``S`` the whitened
    covariance. After robust whitening the clean rows look isotropic and the poisons stand out
    along the few directions ``Q`` amplifies. Higher = more suspicious.

    Parameters
    ----------
    n_components : int
        Dimensions kept per class (the paper uses 32 for CIFAR-10).
    alpha : float
        QUE's exponent; 4 in the paper.
    max_valley : float
        Without a contamination budget, a class is judged poisoned when its ``log(score)`` splits
        (1-D 2-means) into a high group parted from the rest by a valley at most this deep
        (:func:`sanitize.detect.whitened.valley`); its samples above the valley are flagged.
    min_group : int
        Fewest samples in that high group.
    robust_sample : int
        Most rows per class that the robust (MCD) estimate is fitted on; every row is scored.

    The paper removes the ``1.5 * rate`` highest scores of a class, which needs the rate. A robust
    z-score on ``log(score)`` cannot stand in for it: the log-scores of clean classes tail off far to
    the right (90th percentile 3 to 8 above the median on Fashion-MNIST), and when poisons are a third
    of their class they move the median and MAD. What does tell them apart is the gap: on BadNets at
    5 % the poisons' log-scores start at 8.0 and the clean samples of their class stop at 5.4, while a
    clean class tails off without one.
    """

    name = "spectre"

    def __init__(
        self,
        *,
        contamination: float | None = None,
        n_components: int = 32,
        alpha: float = 4.0,
        max_valley: float = 0.1,
        min_group: int = 10,
        robust_sample: int = 2000,
        random_state: int = 0,
    ):
        super().__init__(contamination=contamination, random_state=random_state)
        self.n_components = n_components
        self.alpha = alpha
        self.max_valley = max_valley
        self.min_group = min_group
        self.robust_sample = robust_sample

    def fit(self, features: np.ndarray, labels: np.ndarray) -> Self:
        self.mean_: dict[int, np.ndarray] = {}
        self.basis_: dict[int, np.ndarray] = {}
        self.robust_mean_: dict[int, np.ndarray] = {}
        self.whitener_: dict[int, np.ndarray] = {}
        self.que_: dict[int, np.ndarray] = {}
        rng = np.random.default_rng(self.random_state)
        for c in np.unique(labels):
            c = int(c)
            x = features[labels == c]
            mean = x.mean(axis=0)
            k = max(1, min(self.n_components, x.shape[1], len(x) // 4))
            # The top-k right singular vectors of the centred class, from its (d, d) scatter matrix.
            _, vecs = np.linalg.eigh((x - mean).T @ (x - mean))
            basis = vecs[:, ::-1][:, :k].T
            z = (x - mean) @ basis.T
            if len(x) > 2 * k + 2:
                # The robust estimate from at most ``robust_sample`` rows: a 32-dimensional mean and
                # covariance are pinned down by a few thousand.
                rows = z
                if len(z) > self.robust_sample:
                    rows = z[rng.choice(len(z), self.robust_sample, replace=False)]
                mu, cov = deterministic_mcd(rows, support_fraction=0.55)
            else:
                mu, cov = z.mean(axis=0), np.cov(z.T).reshape(k, k)
            robust_whitener = whitener(cov, floor=1e-6)
            white = (z - mu) @ robust_whitener
            s = np.cov(white.T).reshape(k, k)
            top = float(np.linalg.eigvalsh(s)[-1])
            ws_, vs = np.linalg.eigh((s - np.eye(k)) * (self.alpha / max(top - 1.0, 1e-6)))
            q = (vs * np.exp(ws_)) @ vs.T
            self.mean_[c], self.basis_[c], self.robust_mean_[c] = mean, basis, mu
            self.whitener_[c], self.que_[c] = robust_whitener, q / np.trace(q)
        self.fitted_ = True
        return self

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """QUE score (n,) of each robustly whitened sample; higher = more suspicious."""
        self._check_fitted()
        scores = np.zeros(len(labels), dtype=np.float64)
        for c in np.unique(labels):
            c = int(c)
            idx = labels == c
            white = ((features[idx] - self.mean_[c]) @ self.basis_[c].T - self.robust_mean_[c]) @ self.whitener_[c]
            scores[idx] = np.einsum("ij,jk,ik->i", white, self.que_[c], white)
        return scores

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        logs = np.sort(np.log(np.maximum(class_scores, 1e-300)))
        n = len(logs)
        if n < 2 * self.min_group:
            return np.inf, f"clean: {n} samples, too few to look for a group of {self.min_group}"
        # Exact 1-D 2-means: the cut of the sorted values with the least within-group sum of squares.
        cum, cum_sq = np.cumsum(logs), np.cumsum(logs**2)
        k = np.arange(1, n)
        low_ss = cum_sq[:-1] - cum[:-1] ** 2 / k
        high_ss = (cum_sq[-1] - cum_sq[:-1]) - (cum[-1] - cum[:-1]) ** 2 / (n - k)
        cut = int(np.argmin(low_ss + high_ss)) + 1
        low, high = logs[:cut], logs[cut:]
        base = float(np.median(low))
        ratio, at = valley(low - base, high - base)
        stats = f"log-score groups of {len(low)} and {len(high)}, valley {ratio:.2f}"
        if len(high) < self.min_group or ratio > self.max_valley or not np.isfinite(at):
            return np.inf, f"clean: {stats}"
        threshold = base + at
        return float(np.exp(threshold)), f"poisoned: {stats}; flags log-score >= {threshold:.3g}"


def deterministic_mcd(z: np.ndarray, *, support_fraction: float, max_steps: int = 50) -> tuple[np.ndarray, np.ndarray]:
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

    signs = (z - median) / np.maximum(np.linalg.norm(z - median, axis=1, keepdims=True), 1e-12)
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
    inside = d2 * float(chi2.ppf(0.5, k) / np.median(d2)) <= chi2.ppf(0.975, k)
    if inside.sum() > k:
        mu, cov = z[inside].mean(axis=0), np.cov(z[inside].T)
    return mu, cov
