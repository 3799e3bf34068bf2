"""The one API every detector follows (scikit-learn's estimator convention).

Scores and decisions are separate steps. ``score_samples`` gives each sample a suspicion score,
**higher = more suspicious**, everywhere in the package. ``fit`` learns, besides the model, each
class's threshold from the training samples' scores (``thresholds_``, as scikit-learn's
``EllipticEnvelope`` learns ``offset_``): with a budget, the expected contamination when the user
gives it, otherwise a threshold the detector estimates from the data (the user never has to know the
poison rate). ``flag`` applies the thresholds.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar, Self

import numpy as np
import pyarrow as pa

from sanitize.detect._params import Constraint, Interval, validate_params
from sanitize.detect._stats import TINY, robust_sd
from sanitize.errors import DetectionError, InputError

#: With a contamination ``c`` given, a detector flags the top ``BUDGET_FACTOR * c`` of each class: the
#: budget of Tran, Li and Madry (NeurIPS 2018), who remove 1.5 times the poison rate (set on CIFAR-10).
BUDGET_FACTOR = 1.5

#: Without one, the default rule: a robust z-score of at least 3.5, Iglewicz and Hoaglin's outlier rule
#: for the modified z-score (a textbook value; on Fashion-MNIST's clean 60k features it flagged 0.39 % of
#: the samples through spectral signatures, bench/RESULTS.md "Each detector alone").
ROBUST_Z = 3.5


def flag_budget(contamination: float, n_samples: int) -> int:
    """How many of ``n_samples`` a contamination allows to flag: ``ceil(BUDGET_FACTOR * c * n)``."""
    # Rounded first: 1.5 * 0.1 is 0.15000000000000002 in floating point.
    return math.ceil(round(BUDGET_FACTOR * contamination * n_samples, 9))


#: The largest poison share the tool is built for (poisonings of 0.1 % to 10 % of a dataset): a group
#: of more than ``flag_budget(MAX_POISON_RATE, n)`` samples of ``n`` is not a poisoning it looks for.
MAX_POISON_RATE = 0.1


def cap_flags(
    flags: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    thresholds: dict[int, float],
    notes: dict[int, str],
    contamination: float,
) -> None:
    """Keep (in place) only the ``flag_budget(contamination, n)`` highest-scoring flags over all
    classes; a capped class's threshold becomes its lowest kept score, and its note says so."""
    cap = flag_budget(contamination, len(scores))
    if flags.sum() <= cap:
        return
    keep = np.flatnonzero(flags)[np.argsort(-scores[flags], kind="stable")[:cap]]
    flags[:] = False
    flags[keep] = True
    for c in np.unique(labels[keep]):
        thresholds[int(c)] = float(scores[keep][labels[keep] == c].min())
        notes[int(c)] += f"; capped at {cap} flags ({BUDGET_FACTOR:g} x contamination {contamination:g})"


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
    """Base class. Subclasses set ``name``, declare ``_parameter_constraints`` and implement ``_fit``
    and ``score_samples``; :meth:`fit` does the rest.

    Hyper-parameters are keyword-only ``__init__`` arguments stored unchanged, checked when the
    detector is fitted; what ``fit`` learns ends in ``_``. Every detector learns, beside its model:

    Attributes
    ----------
    training_scores_ : ndarray (n,) float64
        The suspicion score of each sample ``fit`` saw, as ``score_samples`` gives it (like
        scikit-learn's ``LocalOutlierFactor.negative_outlier_factor_``).
    thresholds_ : dict[int, float]
        Per class: a sample is flagged when its score is >= this (``inf``: the class flags nothing).
    notes_ : dict[int, str]
        Per class: a short account of that decision, for reviewers.
    fitted_ : bool
        True once ``fit`` has run.
    """

    name: ClassVar[str]
    #: Whether the detector is accurate enough on float32 features to skip a float64 copy of them.
    float32_ok: ClassVar[bool] = False
    #: Whether the detector reads the raw inputs (flattened pixels in [0, 1]) instead of the model's features.
    input_space: ClassVar[bool] = False
    #: The run-wide settings of :func:`sanitize.detect.make_detector` that this class takes under a
    #: parameter of another name (setting -> parameter). A setting goes to the parameter of its own
    #: name otherwise, where ``__init__`` has one.
    run_settings: ClassVar[Mapping[str, str]] = {}
    #: Per ``__init__`` parameter, the values it may take (any one constraint suffices), checked by ``fit``.
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        # scikit-learn's bound for outlier detectors: more than half poisoned is no minority.
        "contamination": [None, Interval(Real, 0.0, 0.5, closed="right")],
        # The seeds numpy, scikit-learn's k-means and torch all accept.
        "random_state": [Interval(Integral, 0, 2**32 - 1, closed="both")],
    }

    def __init__(self, *, contamination: float | None = None, random_state: int = 0):
        self.contamination = contamination
        self.random_state = random_state

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters, as given to ``__init__``."""
        return {p: getattr(self, p) for p in self._get_param_names()}

    def _validate_params(self) -> None:
        """Raise ``ValueError`` naming the class, the parameter and its value when one is out of bounds."""
        validate_params(type(self).__name__, self.get_params(), self._parameter_constraints)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> Self:
        """Learn from (n, d) features and (n,) int labels what scoring and flagging need; return ``self``.

        Checks the hyper-parameters (:meth:`_validate_params`) and the data (:func:`check_features`),
        learns the model (:meth:`_fit`), scores the training samples (``training_scores_``) and learns
        each class's threshold from those scores (``thresholds_`` and ``notes_``).
        """
        self._validate_params()
        features, labels = check_features(features, labels, keep_float32=self.float32_ok)
        self.fitted_ = False
        self._fit(features, labels)
        self.fitted_ = True
        scores = self.score_samples(features, labels)
        if scores.shape != labels.shape or not np.isfinite(scores).all():
            raise DetectionError(f"detector {self.name} produced invalid scores")
        self.training_scores_ = scores
        self.thresholds_, self.notes_ = self._fit_thresholds(scores, labels)
        return self

    @abstractmethod
    def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Learn the model from checked (n, d) features and (n,) int64 labels."""

    @abstractmethod
    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Suspicion score (n,) float64, higher = more suspicious."""

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise DetectionError(f"{type(self).__name__} is not fitted; call fit(features, labels) first")

    def _fit_thresholds(self, scores: np.ndarray, labels: np.ndarray) -> tuple[dict[int, float], dict[int, str]]:
        """Each class's threshold and note, from the training scores. With ``contamination`` given,
        the score of the class's ``flag_budget``-th most suspicious sample (Tran et al.'s budget);
        otherwise :meth:`_auto_threshold`."""
        thresholds: dict[int, float] = {}
        notes: dict[int, str] = {}
        for c, idx in class_indices(labels):
            s = scores[idx]
            if self.contamination is not None:
                k = flag_budget(self.contamination, len(idx))
                thr = float(np.sort(s)[::-1][k - 1]) if k > 0 else np.inf
                notes[c] = f"top {k} of {len(idx)} ({BUDGET_FACTOR:g} x contamination {self.contamination:g})"
            else:
                thr, notes[c] = self._auto_threshold(s, c)
            thresholds[c] = thr
        return thresholds, notes

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        """Default rule without a known rate: robust z-score of at least ``ROBUST_Z``."""
        return robust_threshold(class_scores, z=ROBUST_Z)

    def flag(self, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict[int, float], dict[int, str]]:
        """Flags (n,) bool where a score reaches its class's learned threshold, and the thresholds and
        notes of the classes in ``labels``."""
        self._check_fitted()
        flags = np.zeros(len(scores), dtype=bool)
        thresholds: dict[int, float] = {}
        notes: dict[int, str] = {}
        for c, idx in class_indices(labels):
            if c not in self.thresholds_:
                raise DetectionError(f"{type(self).__name__} was not fitted on class {c}")
            thresholds[c], notes[c] = self.thresholds_[c], self.notes_[c]
            flags[idx] = scores[idx] >= thresholds[c]
        return flags, thresholds, notes

    def detect(self, features: np.ndarray, labels: np.ndarray) -> DetectorResult:
        """Fit on the data and flag it: the transductive use in a cleaning run."""
        features, labels = check_features(features, labels, keep_float32=self.float32_ok)
        self.fit(features, labels)
        scores = self.training_scores_
        flags, thresholds, notes = self.flag(scores, labels)
        rate = share_by_class(flags, labels)
        return DetectorResult(self.name, scores, flags, thresholds, rate, self.get_params(), notes)


def check_fitted_samples(
    detector: Detector, features: np.ndarray, labels: np.ndarray, fitted: tuple[np.ndarray, np.ndarray]
) -> None:
    """For a detector that scores only the samples it was fitted on (``fitted``: their features and
    labels): raise :class:`DetectionError` unless ``features`` and ``labels`` are those samples."""
    fitted_features, fitted_labels = fitted
    same = features is fitted_features or (
        np.shape(features) == fitted_features.shape and np.array_equal(features, fitted_features)
    )
    if not same or not np.array_equal(labels, fitted_labels):
        raise DetectionError(
            f"{type(detector).__name__} scores only the samples it was fitted on (their scores are its "
            "training_scores_); to score other samples, fit it on them"
        )


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
    """median + z robust sd (``MAD_TO_SD`` x MAD): about z standard deviations for Gaussian scores,
    robust to outliers."""
    med = float(np.median(scores))
    mad = robust_sd(scores, med, fallback=TINY)
    thr = med + z * mad
    return thr, f"robust z >= {z:g} (median {med:.3g} + {z:g} x MAD {mad:.3g})"
