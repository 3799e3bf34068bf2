"""Detectors: one estimator API (see :mod:`sanitize.detect.base`), one registry, one verdict."""

from sanitize.detect.base import Detector, DetectorResult, check_features
from sanitize.detect.clustering import ActivationClustering
from sanitize.detect.input_gap import InputGap
from sanitize.detect.input_neighbours import InputNeighbours
from sanitize.detect.knn import KNNLabelDisagreement
from sanitize.detect.spectral import SpectralSignature
from sanitize.detect.spectre import Spectre
from sanitize.detect.verdict import Verdict, combine
from sanitize.detect.whitened import WhitenedClustering

REGISTRY: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        SpectralSignature,
        ActivationClustering,
        KNNLabelDisagreement,
        Spectre,
        WhitenedClustering,
        InputGap,
        InputNeighbours,
    )
}


def make_detector(name: str, *, contamination: float | None = None, random_state: int = 0, knn_k: int = 20) -> Detector:
    """Build a registered detector by name, with the run's shared settings."""
    if name not in REGISTRY:
        raise ValueError(f"unknown detector {name!r}; registered: {sorted(REGISTRY)}")
    if name == KNNLabelDisagreement.name:
        return KNNLabelDisagreement(contamination=contamination, k=knn_k, random_state=random_state)
    return REGISTRY[name](contamination=contamination, random_state=random_state)


__all__ = [
    "REGISTRY",
    "ActivationClustering",
    "Detector",
    "InputGap",
    "InputNeighbours",
    "DetectorResult",
    "KNNLabelDisagreement",
    "Spectre",
    "SpectralSignature",
    "Verdict",
    "WhitenedClustering",
    "check_features",
    "combine",
    "make_detector",
]
