"""Spectral signatures (Tran, Li and Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018)."""

from __future__ import annotations

from typing import Self

import numpy as np

from sanitize.detect.base import Detector, robust_threshold


class SpectralSignature(Detector):
    """Score each sample by its squared projection on the top singular vector of its class.

    For each class, the features are centred on the class mean; the top right-singular vector ``v``
    of that centred matrix is the direction of greatest variance, along which a poisoned
    sub-population separates from the clean one. The suspicion score of row ``x`` is
    ``((x - mean) . v) ** 2``; higher = more suspicious.

    Parameters
    ----------
    contamination : float, optional
        Expected poison share; flags the top ``1.5 * contamination`` of every class as in the paper.
        None flags scores above a robust z-score of ``z`` within each class.
    z : float
        Robust z-score threshold on ``sqrt(score)`` when no contamination is given.
    """

    name = "spectral"

    def __init__(self, *, contamination: float | None = None, z: float = 3.5, random_state: int = 0):
        super().__init__(contamination=contamination, random_state=random_state)
        self.z = z

    def fit(self, features: np.ndarray, labels: np.ndarray) -> Self:
        self.means_: dict[int, np.ndarray] = {}
        self.directions_: dict[int, np.ndarray] = {}
        for c in np.unique(labels):
            x = features[labels == c]
            mean = x.mean(axis=0)
            centred = x - mean
            # The top right-singular vector is the top eigenvector of the d x d scatter matrix,
            # which is cheaper than an SVD of the n x d matrix when n >> d.
            _, vecs = np.linalg.eigh(centred.T @ centred)
            self.means_[int(c)] = mean
            self.directions_[int(c)] = vecs[:, -1]
        self.fitted_ = True
        return self

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Squared projection (n,) on the class's top singular vector; higher = more suspicious."""
        self._check_fitted()
        scores = np.zeros(len(labels), dtype=np.float64)
        for c in np.unique(labels):
            idx = labels == c
            scores[idx] = ((features[idx] - self.means_[int(c)]) @ self.directions_[int(c)]) ** 2
        return scores

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        # Projections are roughly Gaussian for a clean class: threshold |projection|, then square back.
        thr, note = robust_threshold(np.sqrt(class_scores), z=self.z)
        return thr**2, f"|projection| {note}"
