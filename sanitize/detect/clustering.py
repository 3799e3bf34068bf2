"""Activation clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by
Activation Clustering", 2018)."""

from __future__ import annotations

from typing import Self

import numpy as np

from sanitize.detect.base import Detector


class ActivationClustering(Detector):
    """Split each class's features in two and flag the smaller cluster when the split is real.

    Per class: reduce the centred features to ``n_components`` dimensions (the paper uses ICA; PCA
    gives the same subspace up to rotation), run 2-means, and measure the split's silhouette.
    Written in NumPy for speed: the principal axes, the split and the cluster shares come from at
    most ``fit_sample`` random rows of the class (every row is scored afterwards), the axes by
    subspace iteration, 2-means is Lloyd's with k-means++ seeding (best of ``n_init``; one start,
    scikit-learn's default with k-means++), and the silhouette is the mean over
    ``sample_size`` of those rows (its standard error is about 0.01 at 500). A class is judged
    poisoned when the silhouette reaches ``silhouette_threshold`` and the smaller cluster holds at
    most ``max_poison_share`` of the class.

    The suspicion score is ``d(x, large centroid) - d(x, small centroid)`` in the reduced space,
    scaled by the class's spread: positive = closer to the small cluster; higher = more suspicious.
    """

    name = "activation_clustering"
    # A 10-dimensional subspace and a 2-way split: float32 features find the same ones.
    float32_ok = True

    def __init__(
        self,
        *,
        contamination: float | None = None,
        n_components: int = 10,
        silhouette_threshold: float = 0.15,
        max_poison_share: float = 0.35,
        sample_size: int = 500,
        fit_sample: int = 2000,
        n_init: int = 1,
        random_state: int = 0,
    ):
        super().__init__(contamination=contamination, random_state=random_state)
        self.n_components = n_components
        self.silhouette_threshold = silhouette_threshold
        self.max_poison_share = max_poison_share
        self.sample_size = sample_size
        self.fit_sample = fit_sample
        self.n_init = n_init

    def fit(self, features: np.ndarray, labels: np.ndarray) -> Self:
        rng = np.random.default_rng(self.random_state)
        self.mean_: dict[int, np.ndarray] = {}
        self.components_: dict[int, np.ndarray] = {}
        self.centroids_: dict[int, np.ndarray] = {}
        self.silhouette_: dict[int, float] = {}
        self.small_share_: dict[int, float] = {}
        self.scale_: dict[int, float] = {}
        for c in np.unique(labels):
            c = int(c)
            idx = np.flatnonzero(labels == c)
            # The axes, the split and the cluster shares from at most ``fit_sample`` rows of the class: a
            # 10-dimensional subspace and a 2-way split are pinned down by a few thousand samples, and
            # every sample is scored against them afterwards.
            if len(idx) > self.fit_sample:
                idx = rng.choice(idx, self.fit_sample, replace=False)
            rows = features[idx]
            mean = rows.mean(axis=0, dtype=np.float64)
            k = max(1, min(self.n_components, rows.shape[1], len(rows) - 1))
            centred = rows - mean.astype(rows.dtype)
            covariance = (centred.T @ centred).astype(np.float64) / max(len(rows) - 1, 1)
            variances, axes = _top_eigenvectors(covariance, k, rng)
            z = centred @ axes.astype(rows.dtype)
            self.mean_[c], self.components_[c] = mean, axes
            self.scale_[c] = float(np.sqrt(max(variances.sum(), 0.0))) or 1.0
            if len(rows) < 4:
                self.silhouette_[c], self.small_share_[c] = 0.0, 0.0
                self.centroids_[c] = np.stack([z.mean(0), z.mean(0)]).astype(np.float64)
                continue
            assign, centres = _two_means(z, rng, self.n_init)
            sizes = np.bincount(assign, minlength=2)
            small = int(np.argmin(sizes))
            if sizes.min() > 0:
                pick = rng.choice(len(z), min(self.sample_size, len(z)), replace=False)
                sil = _silhouette_two(z[pick], assign[pick])
            else:
                sil = 0.0
            # Row 0 = the large cluster's centroid, row 1 = the small one's.
            self.centroids_[c] = centres[[1 - small, small]]
            self.silhouette_[c] = float(sil)
            self.small_share_[c] = float(sizes[small] / len(z))
        self.fitted_ = True
        return self

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Scaled distance margin (n,) towards the smaller cluster; higher = more suspicious."""
        self._check_fitted()
        scores = np.zeros(len(labels), dtype=np.float64)
        for c in np.unique(labels):
            c = int(c)
            idx = np.flatnonzero(labels == c)
            axes = self.components_[c]
            # Project in the features' own precision; the class mean's projection is subtracted after.
            z = (features[idx] @ axes.astype(features.dtype)).astype(np.float64) - self.mean_[c] @ axes
            cen = self.centroids_[c]
            d_large = np.linalg.norm(z - cen[0], axis=1)
            d_small = np.linalg.norm(z - cen[1], axis=1)
            scores[idx] = (d_large - d_small) / self.scale_[c]
        return scores

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        sil, share = self.silhouette_[label], self.small_share_[label]
        if sil >= self.silhouette_threshold and share <= self.max_poison_share:
            return 0.0, (
                f"poisoned: silhouette {sil:.2f} >= {self.silhouette_threshold:g}, small cluster "
                f"{share:.1%} <= {self.max_poison_share:.0%}; flags the small cluster"
            )
        return np.inf, f"clean: silhouette {sil:.2f}, small cluster {share:.1%}"


def _top_eigenvectors(matrix: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues (k,) and eigenvectors (d, k) of a symmetric PSD matrix, by subspace
    iteration on ``k + 8`` vectors (Halko, Martinsson and Tropp 2011); exact when ``k`` is close to ``d``."""
    d = matrix.shape[0]
    width = k + 8
    if width >= d // 2:
        w, v = np.linalg.eigh(matrix)
        return w[::-1][:k], v[:, ::-1][:, :k]
    basis = np.linalg.qr(matrix @ rng.standard_normal((d, width)))[0]
    for _ in range(6):
        basis = np.linalg.qr(matrix @ basis)[0]
    w, v = np.linalg.eigh(basis.T @ matrix @ basis)
    return w[::-1][:k], (basis @ v)[:, ::-1][:, :k]


def _two_means(
    z: np.ndarray, rng: np.random.Generator, n_init: int, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's 2-means with k-means++ seeding, best of ``n_init``: (assignments (n,), centres (2, k))."""
    z = z.astype(np.float64, copy=False)
    n = len(z)
    sq = np.einsum("ij,ij->i", z, z)
    total = z.sum(axis=0)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(n_init):
        first = z[rng.integers(n)]
        d2 = np.maximum(sq - 2 * z @ first + first @ first, 0.0)
        mass = float(d2.sum())
        second = z[rng.choice(n, p=d2 / mass)] if mass > 0 else z[rng.integers(n)]
        centres = np.stack([first, second])
        assign = np.zeros(n, dtype=bool)
        for it in range(max_iter):
            # The nearer centre, by the sign of |z-a|^2 - |z-b|^2 = 2 z.(b-a) + |a|^2 - |b|^2.
            new = 2 * (z @ (centres[1] - centres[0])) + centres[0] @ centres[0] - centres[1] @ centres[1] > 0
            if it and np.array_equal(new, assign):
                break
            assign = new
            n1 = int(assign.sum())
            if n1 in (0, n):
                break
            sum1 = assign.astype(np.float64) @ z
            centres = np.stack([(total - sum1) / (n - n1), sum1 / n1])
        # Inertia without the distance matrix: sum |z|^2 - n_j |centre_j|^2 over both clusters.
        n1 = int(assign.sum())
        inertia = float(sq.sum() - (n - n1) * centres[0] @ centres[0] - n1 * centres[1] @ centres[1])
        if best is None or inertia < best[0]:
            best = (inertia, assign.astype(np.int64), centres.copy())
    assert best is not None
    return best[1], best[2]


def _silhouette_two(z: np.ndarray, assign: np.ndarray) -> float:
    """Mean silhouette of a two-cluster assignment (Rousseeuw 1987), on Euclidean distances."""
    z = z.astype(np.float64, copy=False)
    sizes = np.bincount(assign, minlength=2)
    if sizes.min() < 1:
        return 0.0
    sq = np.einsum("ij,ij->i", z, z)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * (z @ z.T), 0.0))
    # Row sums of distances to each cluster, as one product with the one-hot assignment.
    sums = dist @ np.eye(2)[assign]
    rows = np.arange(len(z))
    own, other = assign, 1 - assign
    # Mean distance to the rest of one's own cluster (not oneself), and to the other cluster.
    a = sums[rows, own] / np.maximum(sizes[own] - 1, 1)
    b = sums[rows, other] / sizes[other]
    s = np.where(sizes[own] > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())
