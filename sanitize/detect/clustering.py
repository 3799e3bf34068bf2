"""Activation clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by
Activation Clustering", 2018)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from sanitize.detect._params import Interval
from sanitize.detect.base import Detector, class_indices, present_classes
from sanitize.errors import DetectionError

#: Fewest rows of a class to split: 2-means and a silhouette need two clusters of two.
MIN_SPLIT_ROWS = 4

# The principal axes by subspace iteration (Halko, Martinsson and Tropp 2011): their oversampling of
# 5 to 10 extra vectors, and 3 rounds, measured on Fashion-MNIST's 60k x 128 features (ebb9c17): the
# top-10 subspace then agrees with the exact one to a principal-angle cosine of 0.998 or more, and six
# rounds cost 50 % more for no change in a split. Exact eigenvectors once the width nears half of d.
SUBSPACE_OVERSAMPLING = 8
SUBSPACE_ROUNDS = 3

# Lloyd's iterations and tolerance: scikit-learn's KMeans defaults, which the split is pinned to.
KMEANS_MAX_ITER = 300
KMEANS_TOL = 1e-4


class ActivationClustering(Detector):
    """Split each class's features in two and flag the smaller cluster when the split is real.

    Per class: reduce the centred features to ``n_components`` dimensions (the paper uses ICA; PCA
    gives the same subspace up to rotation), run 2-means, and measure the split's silhouette.
    Written in NumPy for speed: the principal axes, the split and the cluster shares come from at
    most ``fit_sample`` random rows of the class (every row is scored afterwards), the axes by
    subspace iteration, 2-means is Lloyd's with k-means++ seeding (best of ``n_init``; one start,
    scikit-learn's default with k-means++), and the silhouette is the mean over
    ``sample_size`` of those rows. On a 60k Fashion-MNIST run, 1,000 and 300 rows moved the
    per-class silhouettes by 0.026 (sd over seeds; 0.018 with 2,000 and 500) and the cluster shares
    by 0.024 (0.035), about a third of the time. A class is judged
    poisoned when the silhouette reaches ``silhouette_threshold`` and the smaller cluster holds at
    most ``max_poison_share`` of the class.

    The suspicion score is the signed distance from the hyperplane halfway between the two centroids
    in the reduced space (the 2-means boundary), scaled by the class's spread: positive = on the
    small cluster's side; higher = more suspicious. It is linear in the features, so every sample
    is scored by one matrix product.

    Parameters
    ----------
    n_components : int, default 10
        Dimensions of the reduced space: the paper's 10 (ICA), as in IBM ART's ``nb_dims``.
    silhouette_threshold : float, default 0.15
        Smallest silhouette of a real split. Set with the first detectors (ba5c40b), a little above
        ART's 0.1, and not tuned: on Fashion-MNIST's clean 60k features (bench/RESULTS.md "Each
        detector alone") it still split clean classes (8.8 % flagged), so this detector is evidence,
        not a voter.
    max_poison_share : float, default 0.35
        Largest share of the class in the smaller cluster: the paper's relative-size test, ART's
        ``size_threshold``. At 10 % on Fashion-MNIST the poisons are the *larger* cluster and escape it.
    sample_size : int, default 300
        Rows the silhouette is computed on.
    fit_sample : int, default 1000
        Most rows of a class the axes, the split and the shares are fitted on. Both sizes measured on
        a 60k Fashion-MNIST run (f6f4743, figures above), at a third of the time of 2,000 and 500.
    n_init : int, default 1
        k-means++ starts: scikit-learn's default with k-means++ (ebb9c17).
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
        sample_size: int = 300,
        fit_sample: int = 1000,
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

    _parameter_constraints = {
        **Detector._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "silhouette_threshold": [Interval(Real, -1.0, 1.0, closed="both")],
        # The smaller of two clusters never holds more than half of the class.
        "max_poison_share": [Interval(Real, 0.0, 0.5, closed="right")],
        "sample_size": [Interval(Integral, 2, None, closed="left")],
        "fit_sample": [Interval(Integral, MIN_SPLIT_ROWS, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
    }

    def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
        rng = np.random.default_rng(self.random_state)
        self.mean_: dict[int, np.ndarray] = {}
        self.components_: dict[int, np.ndarray] = {}
        self.centroids_: dict[int, np.ndarray] = {}
        self.silhouette_: dict[int, float] = {}
        self.small_share_: dict[int, float] = {}
        self.scale_: dict[int, float] = {}
        self.direction_: dict[int, np.ndarray] = {}
        self.offset_: dict[int, float] = {}
        fits: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int]] = []
        for c, idx in class_indices(labels):
            # The axes, the split and the cluster shares from at most ``fit_sample`` rows of the class: a
            # 10-dimensional subspace and a 2-way split are pinned down by a thousand samples, and
            # every sample is scored against them afterwards.
            if len(idx) > self.fit_sample:
                # Sorted, so the rows are read in memory order.
                idx = np.sort(rng.choice(idx, self.fit_sample, replace=False))
            rows = np.take(features, idx, axis=0)
            mean = rows.mean(axis=0, dtype=np.float64)
            k = max(1, min(self.n_components, rows.shape[1], len(rows) - 1))
            # The scatter about the mean without a centred copy: X'X - n m m', the subtraction in float64.
            scatter = (rows.T @ rows).astype(np.float64) - len(rows) * np.outer(mean, mean)
            fits.append((c, rows, mean, scatter / max(len(rows) - 1, 1), k))
        # The principal axes of all classes with the same k in one batched call.
        axes_of: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for k in sorted({f[4] for f in fits}):
            same = [f for f in fits if f[4] == k]
            variances, axes = _top_eigenvectors(np.stack([f[3] for f in same]), k, rng)
            axes_of.update({f[0]: (variances[i], axes[i]) for i, f in enumerate(same)})
        for c, rows, mean, _, _ in fits:
            variances, axes = axes_of[c]
            z = (rows @ axes.astype(rows.dtype)).astype(np.float64) - mean @ axes
            self.mean_[c], self.components_[c] = mean, axes
            self.scale_[c] = float(np.sqrt(max(variances.sum(), 0.0))) or 1.0
            if len(rows) < MIN_SPLIT_ROWS:
                self.silhouette_[c], self.small_share_[c] = 0.0, 0.0
                self.centroids_[c] = np.stack([z.mean(0), z.mean(0)]).astype(np.float64)
                self._set_boundary(c)
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
            self._set_boundary(c)
            self.silhouette_[c] = float(sil)
            self.small_share_[c] = float(sizes[small] / len(z))

    def _set_boundary(self, c: int) -> None:
        """Class ``c``'s score as ``features @ direction_[c] + offset_[c]``: the signed distance of
        the projection ``z = (x - mean) @ axes`` from the hyperplane halfway between the centroids,
        positive towards the small one, in units of the class's spread."""
        large, small = self.centroids_[c]
        gap = small - large
        length = float(np.linalg.norm(gap))
        if length == 0.0:
            self.direction_[c], self.offset_[c] = np.zeros(len(self.mean_[c])), -1.0  # no split: never flagged
            return
        unit = gap / length
        halfway = 0.5 * float(small @ small - large @ large) / length
        axis = self.components_[c] @ unit
        self.direction_[c] = axis / self.scale_[c]
        self.offset_[c] = -(float(self.mean_[c] @ axis) + halfway) / self.scale_[c]

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Signed distance (n,) to the boundary between the class's two clusters, on the small
        cluster's side positive, over the class's spread; higher = more suspicious."""
        self._check_fitted()
        classes = np.array(sorted(self.direction_))
        missing = np.setdiff1d(present_classes(labels), classes)
        if len(missing):
            raise DetectionError(f"{type(self).__name__} was not fitted on class(es) {missing.tolist()}")
        # The k-means boundary is a hyperplane, so each class's score is one linear function of the
        # features: one product with a (d, n_classes) matrix scores every sample at once.
        weights = np.stack([self.direction_[int(c)] for c in classes], axis=1).astype(features.dtype)
        offsets = np.array([self.offset_[int(c)] for c in classes])
        column = np.searchsorted(classes, labels)  # the column of each sample's class
        margins = np.take_along_axis(features @ weights, column[:, None], axis=1)[:, 0]
        return margins.astype(np.float64) + offsets[column]

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        sil, share = self.silhouette_[label], self.small_share_[label]
        if sil >= self.silhouette_threshold and share <= self.max_poison_share:
            return 0.0, (
                f"poisoned: silhouette {sil:.2f} >= {self.silhouette_threshold:g}, small cluster "
                f"{share:.1%} <= {self.max_poison_share:.0%}; flags the small cluster"
            )
        return np.inf, f"clean: silhouette {sil:.2f}, small cluster {share:.1%}"


def _top_eigenvectors(matrix: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues (..., k) and eigenvectors (..., d, k) of symmetric PSD matrices
    (..., d, d), by subspace iteration on ``k + SUBSPACE_OVERSAMPLING`` vectors, ``SUBSPACE_ROUNDS``
    rounds (Halko, Martinsson and Tropp 2011); exact when ``k`` is close to ``d``. A stack of matrices
    is solved in one batched call."""
    d = matrix.shape[-1]
    width = k + SUBSPACE_OVERSAMPLING
    if width >= d // 2:
        w, v = np.linalg.eigh(matrix)
        return w[..., ::-1][..., :k], v[..., ::-1][..., :k]
    basis = np.linalg.qr(matrix @ rng.standard_normal((d, width)))[0]
    # On penultimate-layer features the top-10 subspace then agrees with the exact one to a
    # principal-angle cosine of 0.998 or more, and the variance it holds to 2e-5.
    for _ in range(SUBSPACE_ROUNDS):
        basis = np.linalg.qr(matrix @ basis)[0]
    w, v = np.linalg.eigh(np.swapaxes(basis, -1, -2) @ matrix @ basis)
    return w[..., ::-1][..., :k], (basis @ v)[..., ::-1][..., :k]


def _two_means(
    z: np.ndarray, rng: np.random.Generator, n_init: int, max_iter: int = KMEANS_MAX_ITER, tol: float = KMEANS_TOL
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's 2-means with k-means++ seeding, best of ``n_init``: (assignments (n,), centres (2, k)).

    Stops as scikit-learn's ``KMeans`` does: when no assignment changes, or when the centres move by
    at most ``tol`` times the mean variance of the columns (squared), then assigns once more to the
    final centres. The tolerance matters on a class with no real clusters, where the split creeps
    for dozens of iterations without changing what follows from it.
    """
    z = z.astype(np.float64, copy=False)
    n = len(z)
    sq = np.einsum("ij,ij->i", z, z)
    total = z.sum(axis=0)
    # tol x the columns' mean variance, from sums already at hand (np.var costs a tenth of the fit here).
    tol_abs = tol * max(float(sq.sum() - total @ total / n), 0.0) / (n * z.shape[1])

    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(n_init):
        first = z[rng.integers(n)]
        d2 = np.maximum(sq - 2 * z @ first + first @ first, 0.0)
        mass = float(d2.sum())
        c0 = first
        # k-means++'s second seed: drawn with probability proportional to d2 (the inverse CDF, without
        # the checks that make rng.choice(p=...) cost more than the whole Lloyd loop here).
        pick = int(np.searchsorted(np.cumsum(d2), rng.random() * mass, side="right")) if mass > 0 else rng.integers(n)
        c1 = z[min(pick, n - 1)]
        # The nearer centre, by the sign of |z-a|^2 - |z-b|^2 = 2 z.(b-a) + |a|^2 - |b|^2. The loop is a
        # handful of NumPy calls on (n, k) and (n,) arrays: with k = 10 their overhead is the cost.
        assign = z @ (c1 - c0) > 0.5 * (c1 @ c1 - c0 @ c0)
        for _ in range(max_iter):
            n1 = int(np.count_nonzero(assign))
            if n1 in (0, n):
                break
            sum1 = assign @ z
            m0, m1 = (total - sum1) / (n - n1), sum1 / n1
            shift = float((m0 - c0) @ (m0 - c0) + (m1 - c1) @ (m1 - c1))
            c0, c1 = m0, m1
            new = z @ (c1 - c0) > 0.5 * (c1 @ c1 - c0 @ c0)
            if np.array_equal(new, assign):
                break
            assign = new
            if shift <= tol_abs:
                break
        centres = np.stack([c0, c1])
        # Inertia without the distance matrix: sum |z|^2 - n_j |centre_j|^2 over both clusters (exact
        # when the centres are their clusters' means; close enough to rank starts otherwise).
        n1 = int(assign.sum())
        inertia = float(sq.sum() - (n - n1) * centres[0] @ centres[0] - n1 * centres[1] @ centres[1])
        if best is None or inertia < best[0]:
            best = (inertia, assign.astype(np.int64), centres.copy())
    assert best is not None
    return best[1], best[2]


def _silhouette_two(z: np.ndarray, assign: np.ndarray) -> float:
    """Mean silhouette of a two-cluster assignment (Rousseeuw 1987), on Euclidean distances.

    Distances in float32, in place: a mean of a few hundred silhouettes in [-1, 1] needs no more
    precision (within 1e-6 of float64), and float32 makes it five times faster."""
    z = z.astype(np.float32, copy=False)
    sizes = np.bincount(assign, minlength=2)
    if sizes.min() < 1:
        return 0.0
    sq = np.einsum("ij,ij->i", z, z)
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, built in one buffer.
    dist = z @ z.T
    dist *= -2.0
    dist += sq[:, None]
    dist += sq[None, :]
    np.maximum(dist, 0.0, out=dist)
    np.sqrt(dist, out=dist)
    # Row sums of distances to each cluster, as one product with the one-hot assignment.
    sums = (dist @ np.eye(2, dtype=np.float32)[assign]).astype(np.float64)
    rows = np.arange(len(z))
    own, other = assign, 1 - assign
    # Mean distance to the rest of one's own cluster (not oneself), and to the other cluster.
    a = sums[rows, own] / np.maximum(sizes[own] - 1, 1)
    b = sums[rows, other] / sizes[other]
    s = np.where(sizes[own] > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())
