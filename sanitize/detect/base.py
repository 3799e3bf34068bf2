"""The one API every detector follows (scikit-learn's estimator convention).

Scores and decisions are separate steps. ``score_samples`` gives each sample a suspicion score,
**higher = more suspicious**, everywhere in the package. ``flag`` turns scores into flags, per
class, with a budget: the expected contamination when the user gives it, otherwise a threshold the
detector estimates from the data (the user never has to know the poison rate).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import pyarrow as pa

from sanitize.errors import DetectionError, InputError


@dataclass(frozen=True)
class DetectorResult:
    """What a detector concluded about every sample.

    Attributes
    ----------
    detector : str
        The detector's registry name.
    scores : ndarray (n,) float64
        Suspicion score, higher = more suspicious; comparable within a class.
    flags : ndarray (n,) bool
        True where the detector flags the sample.
    thresholds : dict[int, float]
        Per class: a sample of that class is flagged when its score is >= the threshold
        (``inf`` where the class has no flag).
    estimated_rate : dict[int, float]
        Per class: the share of the class that the detector flagged (its poison-rate estimate).
    params : dict
        The detector's hyper-parameters, recorded with the run.
    notes : dict[int, str]
        Per class: a short account of the decision, for reviewers.
    """

    detector: str
    scores: np.ndarray
    flags: np.ndarray
    thresholds: dict[int, float]
    estimated_rate: dict[int, float]
    params: dict[str, Any]
    notes: dict[int, str] = field(default_factory=dict)

    def judged_poisoned(self) -> set[int]:
        """The classes the detector judged poisoned: those with a finite threshold."""
        return {c for c, t in self.thresholds.items() if np.isfinite(t)}

    def ranks(self, labels: np.ndarray) -> np.ndarray:
        """Rank of each sample's score within its class: 1 = the most suspicious of its class."""
        ranks = np.zeros(len(labels), dtype=np.int64)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            order = np.argsort(-self.scores[idx], kind="stable")
            ranks[idx[order]] = np.arange(1, len(idx) + 1)
        return ranks

    def to_table(self, sample_ids: list[str] | pa.Array, labels: np.ndarray) -> pa.Table:
        """Columns keyed by ``sample_id``: ``<name>_score``, ``_flag``, ``_threshold``, ``_rank``."""
        thr = np.array([self.thresholds.get(int(c), np.inf) for c in labels], dtype=np.float64)
        n = self.detector
        return pa.table(
            {
                "sample_id": sample_ids,
                f"{n}_score": pa.array(self.scores, pa.float64()),
                f"{n}_flag": pa.array(self.flags, pa.bool_()),
                f"{n}_threshold": pa.array(thr, pa.float64()),
                f"{n}_rank": pa.array(self.ranks(labels), pa.int64()),
            }
        )


def check_features(
    features: np.ndarray, labels: np.ndarray, keep_float32: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert: (n, d) finite float, (n,) int labels, every class with >= 2 samples.

    Features become float64, unless ``keep_float32`` and they are float32 already (no copy)."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2:
        raise InputError(f"features must be 2-D (n_samples, n_features), got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise InputError(f"{features.shape[0]} feature rows but labels of shape {labels.shape}")
    if features.shape[0] == 0:
        raise InputError("no samples to score: the feature matrix is empty")
    # The whole-matrix check first (half the time); the rows only when something is wrong.
    if not np.isfinite(features).all():
        rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
        raise InputError(f"features of {len(rows)} samples are NaN or infinite (first rows: {rows[:5].tolist()})")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.min() >= 0:
        counts = np.bincount(labels)  # class indices, as a rule: no sort needed
        small = np.flatnonzero((counts > 0) & (counts < 2))
    else:
        classes, counts = np.unique(labels, return_counts=True)
        small = classes[counts < 2]
    if len(small):
        raise InputError(f"class(es) {small.tolist()} have fewer than 2 samples; a detector cannot score them")
    dtype = np.float32 if keep_float32 and features.dtype == np.float32 else np.float64
    return features.astype(dtype, copy=False), labels.astype(np.int64, copy=False)


class Detector(ABC):
    """Base class. Subclasses set ``name`` and implement ``fit`` and ``score_samples``.

    Hyper-parameters are keyword-only ``__init__`` arguments stored unchanged; what ``fit`` learns
    ends in ``_``.
    """

    name: ClassVar[str]
    #: Whether the detector is accurate enough on float32 features to skip a float64 copy of them.
    float32_ok: ClassVar[bool] = False
    #: Whether the detector reads the raw inputs (flattened pixels in [0, 1]) instead of the model's features.
    input_space: ClassVar[bool] = False

    def __init__(self, *, contamination: float | None = None, random_state: int = 0):
        self.contamination = contamination
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        import inspect

        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    @abstractmethod
    def fit(self, features: np.ndarray, labels: np.ndarray) -> Self:
        """Learn what scoring needs from (n, d) features and (n,) labels; return ``self``."""

    @abstractmethod
    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Suspicion score (n,) float64, higher = more suspicious."""

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise DetectionError(f"{type(self).__name__} is not fitted; call fit(features, labels) first")

    def flag(self, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict[int, float], dict[int, str]]:
        """Flags and per-class thresholds. With ``contamination`` given, the top
        ``1.5 * contamination`` of each class (Tran et al.'s budget); otherwise ``_auto_flag``."""
        flags = np.zeros(len(scores), dtype=bool)
        thresholds: dict[int, float] = {}
        notes: dict[int, str] = {}
        for c, idx in class_indices(labels):
            s = scores[idx]
            if self.contamination is not None:
                # Rounded first: 1.5 * 0.1 is 0.15000000000000002 in floating point.
                k = math.ceil(round(min(1.5 * self.contamination, 1.0) * len(idx), 9))
                thr = float(np.sort(s)[::-1][k - 1]) if k > 0 else np.inf
                notes[int(c)] = f"top {k} of {len(idx)} (1.5 x contamination {self.contamination:g})"
            else:
                thr, notes[int(c)] = self._auto_threshold(s, int(c))
            thresholds[int(c)] = thr
            flags[idx] = s >= thr
        return flags, thresholds, notes

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        """Default rule without a known rate: robust z-score above 3.5 (median + 3.5 x 1.4826 MAD)."""
        return robust_threshold(class_scores, z=3.5)

    def detect(self, features: np.ndarray, labels: np.ndarray) -> DetectorResult:
        """Fit on the data, score it and flag it: the transductive use in a cleaning run."""
        features, labels = check_features(features, labels, keep_float32=self.float32_ok)
        self.fit(features, labels)
        scores = self.score_samples(features, labels)
        if scores.shape != labels.shape or not np.isfinite(scores).all():
            raise DetectionError(f"detector {self.name} produced invalid scores")
        flags, thresholds, notes = self.flag(scores, labels)
        rate = share_by_class(flags, labels)
        return DetectorResult(self.name, scores, flags, thresholds, rate, self.get_params(), notes)


def present_classes(labels: np.ndarray) -> np.ndarray:
    """The classes (ascending) that occur in ``labels``."""
    # bincount finds them without np.unique's sort when labels are class indices (>= 0), as a rule.
    return np.flatnonzero(np.bincount(labels)) if len(labels) and labels.min() >= 0 else np.unique(labels)


def class_indices(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Each class (ascending) with the indices (n_c,) of its samples, ascending."""
    return [(int(c), np.flatnonzero(labels == c)) for c in present_classes(labels)]


def share_by_class(mask: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Per class, the share of its samples where ``mask`` is True."""
    return {c: float(np.count_nonzero(mask[idx]) / len(idx)) for c, idx in class_indices(labels)}


def robust_threshold(scores: np.ndarray, z: float) -> tuple[float, str]:
    """median + z * 1.4826 * MAD: about z standard deviations for Gaussian scores, robust to outliers."""
    med = float(np.median(scores))
    mad = float(np.median(np.abs(scores - med))) * 1.4826
    if mad <= 0:
        mad = float(np.std(scores)) or 1e-12
    thr = med + z * mad
    return thr, f"robust z >= {z:g} (median {med:.3g} + {z:g} x MAD {mad:.3g})"
