"""Loss dynamics: what the reference model did with each sample while it learnt, read from the losses
recorded in every epoch of its training (:func:`sanitize.training.write_dynamics`).

A training-dynamics signal does not depend on how the data looks. Dirty-label poisons carry images of
other classes under the target's label: the model first finds them hard, then learns the trigger and
finds them easier than the rest of their class (ABL, Li et al., NeurIPS 2021, isolate poisons by
their low loss early in training; here the fall itself is measured, since on small datasets the
poisons are learnt late). Natural hard samples stay hard; easy ones are easy from the start.

The score of a sample is how far its log loss fell to a point easier than its class, epoch by
epoch: ``max over e < f of r[e] - r[f]`` with ``r[f] < 0``, where ``r`` is the sample's log loss less
its class's median in that epoch (:func:`sanitize.detect._evidence.relative_log_loss`,
:func:`sanitize.detect._evidence.crossing`); 0 for a sample harder than its class throughout. It
runs as evidence beside the voters: input gap and whitened clustering hold groups to the same
statistic, as a permutation test, where their separation alone does not decide
(:func:`sanitize.detect._evidence.loss_crossing`).
"""

from __future__ import annotations

from numbers import Real
from typing import ClassVar

import numpy as np

from sanitize.detect._evidence import crossings, relative_log_loss
from sanitize.detect._params import Interval
from sanitize.detect.base import ROBUST_Z, Detector, DetectorResult, robust_threshold


class LossDynamics(Detector):
    """Score each sample by how far its training loss fell against its class's (see the module).

    Its data is the (n, E) matrix of training losses, not the features; where a run recorded none
    (a user's model, a reference model cached before dynamics were recorded) every score is 0 and
    nothing is flagged, and each class's note says so.

    Parameters
    ----------
    z : float, default ``ROBUST_Z`` (3.5)
        Without a contamination, a class flags the samples whose fall is at least ``z`` robust
        standard deviations above the class's median fall.
    contamination : float, optional
        Expected poison share; flags the top ``1.5 * contamination`` of every class.
    """

    name = "loss_dynamics"
    #: The run hands it the training dynamics in place of the features.
    data_space: ClassVar[str] = "dynamics"

    _parameter_constraints = {
        **Detector._parameter_constraints,
        "z": [Interval(Real, 0.0, None, closed="neither")],
    }

    def __init__(self, *, contamination: float | None = None, z: float = ROBUST_Z, random_state: int = 0):
        super().__init__(contamination=contamination, random_state=random_state)
        self.z = z

    def detect(self, features: np.ndarray | None, labels: np.ndarray) -> DetectorResult:
        """:meth:`Detector.detect` on the training losses (n, E); None where the run recorded none."""
        if features is None:
            labels = np.asarray(labels)
            classes = [int(c) for c in np.unique(labels)]
            note = "no training dynamics recorded for this run's reference model"
            return DetectorResult(
                self.name,
                np.zeros(len(labels)),
                np.zeros(len(labels), bool),
                dict.fromkeys(classes, np.inf),
                dict.fromkeys(classes, 0.0),
                self.get_params(),
                dict.fromkeys(classes, note),
            )
        return super().detect(features, labels)

    def _fit(self, features: np.ndarray, labels: np.ndarray) -> None:
        self.n_epochs_ = features.shape[1]

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The largest fall (n,) of each sample's relative log loss; higher = more suspicious."""
        self._check_fitted()
        scores = np.zeros(len(labels))
        for c in np.unique(labels):
            idx = labels == c
            scores[idx] = crossings(relative_log_loss(features[idx]))
        return scores

    def _auto_threshold(self, class_scores: np.ndarray, label: int) -> tuple[float, str]:
        return robust_threshold(class_scores, z=self.z)
