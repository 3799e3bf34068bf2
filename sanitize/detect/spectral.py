"""Spectral signatures (Tran, Li and Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018)."""

from __future__ import annotations

from numbers import Real

import numpy as np

from sanitize.detect._params import Interval
from sanitize.detect.base import ROBUST_Z, Detector, robust_threshold
from sanitize.errors import DetectionError


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
    z : float, default ``ROBUST_Z`` (3.5)
        Robust z-score threshold on ``sqrt(score)`` when no contamination is given. The textbook
        outlier rule, not tuned: on Fashion-MNIST (60k, BadNets, bench/RESULTS.md "Each detector
        alone") it flagged 0.39 % of a clean run and missed poisons that are a mode of their class,
        not a tail, which is why this detector runs as evidence, not as a voter.
    """

    name = "spectral"
    # One top eigenvector per class: float32 scatter matrices find the same direction.
    float32_ok = True

    _parameter_constraints = {**Detector._parameter_constraints, "z": [Interval(Real, 0.0, None, closed="neither")]}

    def __init__(self, *, contamination: float | None = None, z: float = ROBUST_Z, random_state: int = 0):
        super().__init__(contamination=contamination, random_state=random_state)
        self.z = z

    def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
        self.means_: dict[int, np.ndarray] = {}
        self.directions_: dict[int, np.ndarray] = {}
        for c, rows in _class_slices(features, labels):
            mean = rows.mean(axis=0, dtype=np.float64)
            # The top right-singular vector of the centred rows is the top eigenvector of their d x d
            # scatter matrix, which is much cheaper than an SVD of the n x d matrix when n >> d.
            scatter = (rows.T @ rows).astype(np.float64) - len(rows) * np.outer(mean, mean)
            _, vecs = np.linalg.eigh(scatter)
            self.means_[c] = mean
            self.directions_[c] = vecs[:, -1]

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Squared projection (n,) on the class's top singular vector; higher = more suspicious."""
        self._check_fitted()
        # One matrix product for all classes, then each sample keeps its own class's column.
        classes = sorted(self.directions_)
        unknown = np.setdiff1d(np.unique(labels), classes)
        if len(unknown):
            raise DetectionError(f"labels {unknown.tolist()} were not seen in fit")
        column = np.searchsorted(classes, labels)
        directions = np.stack([self.directions_[c] for c in classes], axis=1).astype(features.dtype)
        offsets = np.array([self.means_[c] @ self.directions_[c] for c in classes])
        projections = features @ directions
        return ((projections[np.arange(len(labels)), column] - offsets[column]) ** 2).astype(np.float64)

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        # Projections are roughly Gaussian for a clean class: threshold |projection|, then square back.
        thr, note = robust_threshold(np.sqrt(class_scores), z=self.z)
        return thr**2, f"|projection| {note}"


def _class_slices(features: np.ndarray, labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Each class's rows as one contiguous block (one sort, instead of a boolean-mask copy per class)."""
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    rows = features[order]
    ends = np.r_[starts[1:], len(order)]
    return [(int(c), rows[a:b]) for c, a, b in zip(classes, starts, ends, strict=True)]
