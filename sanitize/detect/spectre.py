"""SPECTRE (Hayase, Kong, Somani and Oh, "SPECTRE: Defending Against Backdoor Attacks Using Robust
Statistics", ICML 2021)."""

from __future__ import annotations

from typing import Self

import numpy as np
from sklearn.covariance import MinCovDet

from sanitize.detect.base import Detector, robust_threshold


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
    z : float
        Robust z-score threshold on ``log(score)`` when no contamination is given.
    """

    name = "spectre"

    def __init__(
        self,
        *,
        contamination: float | None = None,
        n_components: int = 32,
        alpha: float = 4.0,
        z: float = 3.5,
        random_state: int = 0,
    ):
        super().__init__(contamination=contamination, random_state=random_state)
        self.n_components = n_components
        self.alpha = alpha
        self.z = z

    def fit(self, features: np.ndarray, labels: np.ndarray) -> Self:
        self.mean_: dict[int, np.ndarray] = {}
        self.basis_: dict[int, np.ndarray] = {}
        self.robust_mean_: dict[int, np.ndarray] = {}
        self.whitener_: dict[int, np.ndarray] = {}
        self.que_: dict[int, np.ndarray] = {}
        for c in np.unique(labels):
            c = int(c)
            x = features[labels == c]
            mean = x.mean(axis=0)
            k = max(1, min(self.n_components, x.shape[1], len(x) // 4))
            _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
            z = (x - mean) @ vt[:k].T
            if len(x) > 2 * k + 2:
                mcd = MinCovDet(random_state=self.random_state, support_fraction=0.55).fit(z)
                mu, cov = mcd.location_, mcd.covariance_
            else:
                mu, cov = z.mean(axis=0), np.cov(z.T).reshape(k, k)
            w, v = np.linalg.eigh(cov)
            w = np.maximum(w, max(w.max(), 1e-12) * 1e-6)
            whitener = v / np.sqrt(w)
            white = (z - mu) @ whitener
            s = np.cov(white.T).reshape(k, k)
            top = float(np.linalg.eigvalsh(s)[-1])
            ws_, vs = np.linalg.eigh((s - np.eye(k)) * (self.alpha / max(top - 1.0, 1e-6)))
            q = (vs * np.exp(ws_)) @ vs.T
            self.mean_[c], self.basis_[c], self.robust_mean_[c] = mean, vt[:k], mu
            self.whitener_[c], self.que_[c] = whitener, q / np.trace(q)
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
        thr, note = robust_threshold(np.log(np.maximum(class_scores, 1e-12)), z=self.z)
        return float(np.exp(thr)), f"log score {note}"
