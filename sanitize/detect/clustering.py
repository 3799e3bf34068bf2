"""Activation clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by
Activation Clustering", 2018)."""

from __future__ import annotations

from typing import Self

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from sanitize.detect.base import Detector


class ActivationClustering(Detector):
    """Split each class's features in two and flag the smaller cluster when the split is real.

    Per class: reduce the centred features to ``n_components`` dimensions (the paper uses ICA; PCA
    gives the same subspace up to rotation and is deterministic), run 2-means, and measure the
    split's silhouette. A class is judged poisoned when the silhouette reaches
    ``silhouette_threshold`` and the smaller cluster holds at most ``max_poison_share`` of the class.

    The suspicion score is ``d(x, large centroid) - d(x, small centroid)`` in the reduced space,
    scaled by the class's spread: positive = closer to the small cluster; higher = more suspicious.
    """

    name = "activation_clustering"

    def __init__(
        self,
        *,
        contamination: float | None = None,
        n_components: int = 10,
        silhouette_threshold: float = 0.15,
        max_poison_share: float = 0.35,
        sample_size: int = 1000,
        random_state: int = 0,
    ):
        super().__init__(contamination=contamination, random_state=random_state)
        self.n_components = n_components
        self.silhouette_threshold = silhouette_threshold
        self.max_poison_share = max_poison_share
        self.sample_size = sample_size

    def fit(self, features: np.ndarray, labels: np.ndarray) -> Self:
        self.pca_: dict[int, PCA] = {}
        self.centroids_: dict[int, np.ndarray] = {}
        self.silhouette_: dict[int, float] = {}
        self.small_share_: dict[int, float] = {}
        self.scale_: dict[int, float] = {}
        for c in np.unique(labels):
            x = features[labels == c]
            k = max(1, min(self.n_components, x.shape[1], len(x) - 1))
            pca = PCA(n_components=k, random_state=self.random_state).fit(x)
            z = pca.transform(x)
            if len(x) < 4:
                self.pca_[int(c)], self.silhouette_[int(c)], self.small_share_[int(c)] = pca, 0.0, 0.0
                self.centroids_[int(c)] = np.stack([z.mean(0), z.mean(0)])
                self.scale_[int(c)] = 1.0
                continue
            km = KMeans(n_clusters=2, n_init=3, random_state=self.random_state).fit(z)
            sizes = np.bincount(km.labels_, minlength=2)
            small = int(np.argmin(sizes))
            sil = (
                silhouette_score(
                    z, km.labels_, sample_size=min(self.sample_size, len(z)), random_state=self.random_state
                )
                if sizes.min() > 0
                else 0.0
            )
            self.pca_[int(c)] = pca
            # Row 0 = the large cluster's centroid, row 1 = the small one's.
            self.centroids_[int(c)] = km.cluster_centers_[[1 - small, small]]
            self.silhouette_[int(c)] = float(sil)
            self.small_share_[int(c)] = float(sizes[small] / len(z))
            self.scale_[int(c)] = float(np.sqrt(pca.explained_variance_.sum())) or 1.0
        self.fitted_ = True
        return self

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Scaled distance margin (n,) towards the smaller cluster; higher = more suspicious."""
        self._check_fitted()
        scores = np.zeros(len(labels), dtype=np.float64)
        for c in np.unique(labels):
            idx = labels == c
            z = self.pca_[int(c)].transform(features[idx])
            cen = self.centroids_[int(c)]
            d_large = np.linalg.norm(z - cen[0], axis=1)
            d_small = np.linalg.norm(z - cen[1], axis=1)
            scores[idx] = (d_large - d_small) / self.scale_[int(c)]
        return scores

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        sil, share = self.silhouette_[label], self.small_share_[label]
        if sil >= self.silhouette_threshold and share <= self.max_poison_share:
            return 0.0, (
                f"poisoned: silhouette {sil:.2f} >= {self.silhouette_threshold:g}, small cluster "
                f"{share:.1%} <= {self.max_poison_share:.0%}; flags the small cluster"
            )
        return np.inf, f"clean: silhouette {sil:.2f}, small cluster {share:.1%}"
