"""k-NN label disagreement on a FAISS index (Peri et al., "Deep k-NN Defense against Clean-label
Data Poisoning Attacks", ECCV Workshops 2020)."""

from __future__ import annotations

from typing import Self

import numpy as np

from sanitize.detect.base import Detector


def knn_search(features: np.ndarray, k: int, *, use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row among the other rows (L2), on a FAISS index.

    Returns distances (n, k) float32 and indices (n, k) int64, the row itself excluded.
    The GPU index is used when FAISS was built with GPU support and a GPU is present.
    """
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32)
    index: faiss.Index = faiss.IndexFlatL2(x.shape[1])
    gpu = faiss.get_num_gpus() > 0 if use_gpu is None else use_gpu
    if gpu and hasattr(faiss, "StandardGpuResources"):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(x)
    kk = min(k + 1, len(x))
    dist, idx = index.search(x, kk)
    # Drop each row's own hit (usually first; with exact duplicates it may be elsewhere).
    own = idx == np.arange(len(x))[:, None]
    keep_first = ~own.any(axis=1)
    own[keep_first, -1] = True
    out_d = dist[~own].reshape(len(x), kk - 1)
    out_i = idx[~own].reshape(len(x), kk - 1)
    return out_d, out_i


class KNNLabelDisagreement(Detector):
    """Score each sample by the share of its ``k`` nearest neighbours that carry another label.

    Peri et al. flag a sample whose neighbours' plurality label differs from its own; that is the
    rule used when no contamination is given. Score in [0, 1]: higher = more suspicious.
    Dirty-label poisons that share a trigger are each other's neighbours and escape this test; it
    catches isolated mislabelled samples and clean-label poisons.
    """

    name = "knn"

    def __init__(self, *, contamination: float | None = None, k: int = 20, random_state: int = 0):
        super().__init__(contamination=contamination, random_state=random_state)
        self.k = k

    def fit(self, features: np.ndarray, labels: np.ndarray) -> Self:
        _, self.neighbours_ = knn_search(features, self.k)
        self.labels_ = labels.copy()
        self.fitted_ = True
        return self

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Share (n,) of the k nearest neighbours whose label differs; higher = more suspicious."""
        self._check_fitted()
        neigh_labels = self.labels_[self.neighbours_]
        return (neigh_labels != labels[:, None]).mean(axis=1)

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        # A strict majority of the neighbours carries another label (Peri et al. use the plurality;
        # the majority keeps the rule a threshold on the score).
        thr = (np.floor(self.k / 2) + 1) / self.k
        return float(thr), f"more than half of the {self.k} nearest neighbours carry another label"
