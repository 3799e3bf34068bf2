"""k-NN label disagreement on a FAISS index (Peri et al., "Deep k-NN Defense against Clean-label
Data Poisoning Attacks", ECCV Workshops 2020)."""

from __future__ import annotations

from numbers import Integral

import numpy as np

from sanitize.detect._params import Interval
from sanitize.detect.base import Detector, check_fitted_samples

EXACT_ROWS = 20_000
"""Up to this many rows the CPU search is exact (a flat index); above it an inverted-file index.

A compute bound, not a tuned figure: an exact search costs n^2 distances, 7.6 s for Fashion-MNIST's
60k rows in 32 dimensions on 2 cores, so under a second below this bound. On those 60k rows
(``python -m bench probe knn-recall``, bench/RESULTS.md "Ninth step") the inverted file keeps 99.6 %
of the exact 30 nearest neighbours in 32 dimensions (1.2 s) and 99.3 % in 128 (2.0 s against 10 s)."""


MIN_LISTS = 64
"""Fewest inverted lists; a search over fewer than two rows per list stays exact."""


def _ivf_shape(n: int) -> tuple[int, int]:
    """Lists and lists probed for an inverted-file search over ``n`` rows: about 2 sqrt(n) lists (at
    most one per two rows), one in 32 of them probed (490 and 15 at 60k rows; the recall measured
    there is in :data:`EXACT_ROWS`)."""
    nlist = min(max(MIN_LISTS, int(round(2.0 * np.sqrt(n)))), n // 2)
    return nlist, min(nlist, max(8, nlist // 32))


def knn_search(
    features: np.ndarray, k: int, *, use_gpu: bool | None = None, approximate: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row among the other rows (L2), on a FAISS index.

    Returns distances (n, k) float32 (squared L2, as FAISS gives them) and indices (n, k) int64, the
    row itself excluded. On a GPU: FAISS's GPU index when FAISS was built with GPU support, else an
    exact search in torch on CUDA (the ``faiss-cpu`` wheel beside a CUDA torch). ``use_gpu=False``
    keeps it on the CPU; ``None`` uses a GPU when one is present.

    On the CPU the search is exact up to :data:`EXACT_ROWS` rows and approximate above them
    (``approximate=None``): an inverted-file index (FAISS ``IndexIVFFlat``, k-means lists; see
    :func:`_ivf_shape`) that probes the lists nearest each row, so a neighbour in a list not probed
    can be missed; rows whose probed lists hold fewer than ``k`` others are searched exactly.
    ``approximate=True`` or ``False`` forces either; a GPU search is always exact. The approximate
    search gives the same answer on the same rows every time; the lists are trained on rows chosen by
    position, so reordering the rows may change a few neighbours.
    """
    import faiss
    import torch

    x = np.ascontiguousarray(features, dtype=np.float32)
    kk = min(int(k) + 1, len(x))
    faiss_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    torch_gpu = torch.cuda.is_available()
    if use_gpu is None:
        use_gpu = faiss_gpu or torch_gpu
    if approximate is None:
        approximate = len(x) > EXACT_ROWS
    if use_gpu and not faiss_gpu and torch_gpu:
        dist, idx = _torch_knn(x, kk)
    elif approximate and not use_gpu and len(x) >= 2 * MIN_LISTS:
        dist, idx = _ivf_knn(x, kk)
    else:
        index: faiss.Index = faiss.IndexFlatL2(x.shape[1])
        if use_gpu and faiss_gpu:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        index.add(x)
        dist, idx = index.search(x, kk)
    # Drop each row's own hit (usually first; with exact duplicates it may be elsewhere).
    own = idx == np.arange(len(x))[:, None]
    keep_first = ~own.any(axis=1)
    own[keep_first, -1] = True
    out_d = dist[~own].reshape(len(x), kk - 1)
    out_i = idx[~own].reshape(len(x), kk - 1)
    return out_d, out_i


def _ivf_knn(x: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate ``kk`` nearest rows of every row (itself included) on an inverted-file index.

    The k-means lists are trained on at most 64 rows per list (evenly spaced rows, so the result does
    not depend on a random draw), ten iterations, FAISS's fixed seed. Rows that come back with fewer
    than ``kk`` hits are searched again on a flat index."""
    import faiss

    n, dim = x.shape
    nlist, nprobe = _ivf_shape(n)
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L2)
    index.cp.niter = 10
    index.cp.min_points_per_centroid = 1  # a small training sample is deliberate, not a warning
    train = x[np.linspace(0, n - 1, min(n, 64 * nlist)).astype(np.int64)]
    index.train(train)
    index.add(x)
    index.nprobe = nprobe
    dist, idx = index.search(x, kk)
    short = (idx < 0).any(axis=1)
    if short.any():
        flat = faiss.IndexFlatL2(dim)
        flat.add(x)
        dist[short], idx[short] = flat.search(np.ascontiguousarray(x[short]), kk)
    return dist, idx


def _torch_knn(x: np.ndarray, kk: int, device: str = "cuda") -> tuple[np.ndarray, np.ndarray]:
    """Exact ``kk`` nearest rows of every row (itself included), squared L2, by blocks on ``device``.

    Distances come from ||a||^2 + ||b||^2 - 2ab in float32 as FAISS's flat index computes them, so the
    two agree up to rounding; ties may come back in another order.
    """
    import torch

    xt = torch.from_numpy(x).to(device)
    sq = (xt * xt).sum(1)
    block = max(256, min(4096, 2**28 // len(x)))  # a block's distances stay under 1 GB
    dists, idxs = [], []
    for start in range(0, len(x), block):
        q = xt[start : start + block]
        d = (sq[start : start + block, None] + sq[None, :] - 2.0 * (q @ xt.T)).clamp_min_(0)
        top = torch.topk(d, kk, dim=1, largest=False, sorted=True)
        dists.append(top.values.cpu())
        idxs.append(top.indices.cpu())
    return torch.cat(dists).numpy(), torch.cat(idxs).numpy().astype(np.int64)


class KNNLabelDisagreement(Detector):
    """Score each sample by the share of its ``k`` nearest neighbours that carry another label.

    Peri et al. flag a sample whose neighbours' plurality label differs from its own; that is the
    rule used when no contamination is given. Score in [0, 1]: higher = more suspicious.
    Dirty-label poisons that share a trigger are each other's neighbours and escape this test; it
    catches isolated mislabelled samples and clean-label poisons.

    A sample's neighbours are the *other* samples it was fitted with, so only those samples can be
    scored: ``score_samples`` returns their scores (``disagreement_``, also ``training_scores_``) and
    raises :class:`~sanitize.errors.DetectionError` for any other data, as scikit-learn's
    ``LocalOutlierFactor`` without ``novelty`` offers its ``negative_outlier_factor_`` instead.

    Parameters
    ----------
    k : int, default 20
        Neighbours per sample. Set with the first detectors (ba5c40b), not tuned; a run passes its
        ``DetectConfig.knn_k`` (also 20). On Fashion-MNIST's 60k features it flagged 6.4 % of a clean
        run (bench/RESULTS.md "Each detector alone"), so it runs as evidence, not as a voter.

    Attributes
    ----------
    neighbours_ : ndarray (n, k) int64
        Each fitted sample's nearest other samples.
    disagreement_ : ndarray (n,) float64
        Each fitted sample's share of neighbours with another label: its suspicion score.
    """

    name = "knn"
    # The run's k (DetectConfig.knn_k) is this detector's k.
    run_settings = {"knn_k": "k"}

    def __init__(self, *, contamination: float | None = None, k: int = 20, random_state: int = 0):
        super().__init__(contamination=contamination, random_state=random_state)
        self.k = k

    _parameter_constraints = {**Detector._parameter_constraints, "k": [Interval(Integral, 1, None, closed="left")]}

    def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
        _, self.neighbours_ = knn_search(features, self.k)
        self.labels_ = labels.copy()
        self.disagreement_ = (self.labels_[self.neighbours_] != labels[:, None]).mean(axis=1)
        self._fitted_samples = (features, self.labels_)

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Share (n,) of each fitted sample's k nearest other samples whose label differs; higher = more
        suspicious. Only the fitted samples: any other data raises ``DetectionError``."""
        self._check_fitted()
        check_fitted_samples(self, features, labels, self._fitted_samples)
        return self.disagreement_

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        # A strict majority of the neighbours carries another label (Peri et al. use the plurality;
        # the majority keeps the rule a threshold on the score).
        thr = (np.floor(self.k / 2) + 1) / self.k
        return float(thr), f"more than half of the {self.k} nearest neighbours carry another label"
