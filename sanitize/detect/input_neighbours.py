"""Input neighbours: a class that holds too many images whose nearest images, pixel for pixel, all
carry other labels.

A dirty-label poison is an image of some other class, stamped with a trigger and relabelled to the
target. When the model learns the trigger only partly (WaNet's warps at a 1 % rate), the poisons
sit inside the target class in feature space and the feature-space detectors see nothing. In the
pixels they still look like where they came from: a warped sneaker's nearest images are sneakers.
This is the k-NN label-disagreement test of Peri et al. (ECCV Workshops 2020), moved from the
model's features to the inputs, where the trigger has not been learned and cannot pull the poisons
together.

Clean data has such images too: sandals that look like sneakers, shirts that look like T-shirts.
So a sample is not judged alone. A class is judged poisoned when its share of *isolated* images
(none of their ``k`` nearest images carries their label) is at least ``min_ratio`` times the median
share of the classes, and at least ``min_excess`` isolated images more than that median predicts.
In a poisoned class, the flagged samples are those of which at least ``flag_disagreement`` of the
neighbours carry other labels.

It votes as a *fallback* (:func:`sanitize.detect.verdict.combine`): only in classes that no other
voter judged poisoned. Where whitened clustering or input gap found a poisoning, they also drew its
border; this detector's border takes in the natural look-alikes of the class as well.

What it cannot see: clean-label poisons (their label is their class), and dirty-label poisons at
rates where they are each other's nearest images (a blended pattern, or a patch at 5 % of the data):
there they are not isolated. Both are the other voters' ground.

Calibrated on Fashion-MNIST (bench/RESULTS.md, ``bench/pixel_neighbours.py``). The most isolated
clean class (shirts) held 2.1-2.6 % of its images isolated, 2.3-2.8x the median class, over 25
finished runs and the raw images; WaNet's and BadNets' 1 % put 7.1 % of the target class there
(7.6x), and 0.5 % 4.6x. With ``flag_disagreement`` 0.8, WaNet 1 % is flagged with recall 0.958 at
1.56x the poison count.
"""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np

from sanitize.detect.base import Detector, share_by_class
from sanitize.detect.knn import knn_search


class InputNeighbours(Detector):
    """k-NN label disagreement among the raw inputs, judged per class by its share of isolated images.

    Parameters
    ----------
    k : int
        Neighbours per sample.
    n_components : int or None
        The inputs are projected on their top principal components first (fit on at most
        ``fit_sample`` rows) for speed; None searches the raw inputs.
    fit_sample : int
        Rows the principal components are fit on.
    min_ratio : float
        Smallest ratio of a poisoned class's share of isolated images to the median class's share.
    min_excess : int
        Fewest isolated images beyond what the median share predicts for the class.
    flag_disagreement : float
        In a poisoned class, the share of the neighbours with another label from which a sample is
        flagged.
    contamination : float, optional
        Not needed. When given, the top ``1.5 * contamination`` of each class by disagreement.
    """

    name = "input_neighbours"
    input_space: ClassVar[bool] = True
    float32_ok = True

    def __init__(
        self,
        *,
        contamination: float | None = None,
        k: int = 30,
        n_components: int | None = 32,
        fit_sample: int = 10_000,
        min_ratio: float = 4.0,
        min_excess: int = 20,
        flag_disagreement: float = 0.83,
        random_state: int = 0,
    ):
        super().__init__(contamination=contamination, random_state=random_state)
        self.k = k
        self.n_components = n_components
        self.fit_sample = fit_sample
        self.min_ratio = min_ratio
        self.min_excess = min_excess
        self.flag_disagreement = flag_disagreement

    def fit(self, features: np.ndarray, labels: np.ndarray) -> Self:
        x = self._project(np.asarray(features, dtype=np.float32))
        _, neighbours = knn_search(x, min(self.k, len(x) - 1))
        self.disagreement_ = (labels[neighbours] != labels[:, None]).mean(axis=1)
        self.isolated_share_ = share_by_class(self.disagreement_ >= 1.0, labels)
        shares = np.array(list(self.isolated_share_.values()))
        self.median_share_ = float(np.median(shares))
        sizes = np.bincount(labels)
        self.poisoned_: dict[int, bool] = {}
        for c, share in self.isolated_share_.items():
            excess = (share - self.median_share_) * sizes[c]
            self.poisoned_[c] = bool(
                len(shares) >= 3 and share >= self.min_ratio * self.median_share_ and excess >= self.min_excess
            )
        self.fitted_ = True
        return self

    def _project(self, x: np.ndarray) -> np.ndarray:
        if self.n_components is None or x.shape[1] <= self.n_components:
            return x
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(self.random_state)
        rows = rng.choice(len(x), size=min(self.fit_sample, len(x)), replace=False)
        pca = PCA(n_components=self.n_components, svd_solver="randomized", random_state=self.random_state)
        pca.fit(x[rows])
        return np.ascontiguousarray(pca.transform(x), dtype=np.float32)

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Share (n,) of the k nearest inputs that carry another label; higher = more suspicious."""
        self._check_fitted()
        return self.disagreement_.astype(np.float64)

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        share, median = self.isolated_share_[label], self.median_share_
        ratio = f"{share / median:.1f}x" if median > 0 else "above"
        stats = (
            f"{share:.1%} of its images have no input neighbour with its label, {ratio} the median class ({median:.1%})"
        )
        if self.poisoned_[label]:
            thr = self.flag_disagreement
            return thr, f"poisoned: {stats}; flags images with >= {thr:.0%} of {self.k} neighbours labelled otherwise"
        return np.inf, f"clean: {stats}"
