"""Detectors: one estimator API (see :mod:`sanitize.detect.base`), one registry, one verdict."""

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sanitize.config import DetectConfig
from sanitize.detect._response import Responder
from sanitize.detect.base import Detector, DetectorResult, check_features
from sanitize.detect.clustering import ActivationClustering
from sanitize.detect.input_gap import InputGap
from sanitize.detect.input_neighbours import InputNeighbours
from sanitize.detect.knn import KNNLabelDisagreement
from sanitize.detect.loss_dynamics import LossDynamics
from sanitize.detect.spectral import SpectralSignature
from sanitize.detect.spectre import Spectre
from sanitize.detect.verdict import Verdict, combine, write_verdict
from sanitize.detect.whitened import WhitenedClustering
from sanitize.errors import DetectionError, SanitizeError

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
        LossDynamics,
    )
}


def make_detector(
    name: str,
    *,
    contamination: float | None = None,
    random_state: int = 0,
    knn_k: int = 20,
    known_poisoned: tuple[int, ...] = (),
) -> Detector:
    """Build a registered detector by name, with the run's shared settings.

    Each setting goes to the detectors whose ``__init__`` takes it: under the parameter the class
    names for it in ``run_settings`` (``knn_k`` is the ``k`` of :class:`KNNLabelDisagreement`), else
    under its own name; a detector without such a parameter does not get it.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown detector {name!r}; registered: {sorted(REGISTRY)}")
    cls = REGISTRY[name]
    settings = {
        "contamination": contamination,
        "random_state": random_state,
        "knn_k": knn_k,
        "known_poisoned": known_poisoned,
    }
    takes = set(cls._get_param_names())
    kwargs: dict[str, Any] = {}
    for setting, value in settings.items():
        param = cls.run_settings.get(setting, setting)
        if param in takes:
            kwargs[param] = value
    return cls(**kwargs)


def run_detectors(
    names: Sequence[str],
    features: np.ndarray,
    labels: np.ndarray,
    inputs: Callable[[], np.ndarray],
    *,
    voters: Sequence[str] = (),
    fallback: Sequence[str] = (),
    contamination: float | None = None,
    random_state: int = 0,
    knn_k: int = 20,
    sources: Callable[[], np.ndarray] | None = None,
    dynamics: Callable[[], np.ndarray | None] | None = None,
    response: Callable[[], Responder | None] | None = None,
) -> tuple[dict[str, DetectorResult], dict[str, float]]:
    """Run the named detectors on the features (``inputs()``, called once, for input-space ones), and
    hand the side inputs a detector names in its ``side_inputs`` where the run has them: each
    sample's source (``sources()``) and its training loss in every epoch of the reference model
    (``dynamics()``, None where none was recorded), and the reference model's response to the
    training images (``response()``, a :class:`~sanitize.detect._response.Responder`), each loaded once.

    Fallback voters run last and are told which classes the voters judged poisoned (their
    ``known_poisoned``, where they take one): they defer there (:func:`combine`), so they need not
    spend work on them. Returns the results and each detector's seconds. A detector that crashes
    raises :class:`DetectionError`: the data must never pass as clean because a detector failed.
    """
    order = [n for n in names if n not in fallback] + [n for n in names if n in fallback]
    results: dict[str, DetectorResult] = {}
    seconds: dict[str, float] = {}
    loaded: np.ndarray | None = None
    side: dict[str, Callable[[], Any] | None] = {"groups": sources, "dynamics": dynamics, "response": response}
    loaded_side: dict[str, Any] = {}
    for name in order:
        start = time.perf_counter()
        known: tuple[int, ...] = ()
        if name in fallback:
            known = tuple(sorted(set().union(*(results[v].judged_poisoned() for v in voters if v in results))))
        detector = make_detector(
            name, contamination=contamination, random_state=random_state, knn_k=knn_k, known_poisoned=known
        )
        data: np.ndarray | None = features
        if detector.input_space:
            loaded = inputs() if loaded is None else loaded
            data = loaded
        elif getattr(detector, "data_space", "features") == "dynamics":
            if "dynamics" not in loaded_side:
                loaded_side["dynamics"] = dynamics() if dynamics is not None else None
            data = loaded_side["dynamics"]
        try:
            wanted = {}
            for key in getattr(detector, "side_inputs", ()):
                load = side.get(key)
                if load is not None:
                    if key not in loaded_side:
                        loaded_side[key] = load()
                    wanted[key] = loaded_side[key]
            results[name] = detector.detect(data, labels, **wanted)  # type: ignore[arg-type]  # None: no dynamics
        except SanitizeError:
            raise
        except Exception as exc:
            raise DetectionError(f"detector {name} failed: {exc}") from exc
        seconds[name] = round(time.perf_counter() - start, 3)
    return {n: results[n] for n in names}, {n: seconds[n] for n in names}


def detect(
    config: DetectConfig,
    features: np.ndarray,
    labels: np.ndarray,
    inputs: Callable[[], np.ndarray],
    *,
    random_state: int = 0,
    sources: Callable[[], np.ndarray] | None = None,
    dynamics: Callable[[], np.ndarray | None] | None = None,
    response: Callable[[], Responder | None] | None = None,
) -> tuple[Verdict, dict[str, float]]:
    """A run's detection: ``config``'s detectors (:func:`run_detectors`) and the voters' verdict
    (:func:`combine`), as the pipeline's detect stage and the benchmarks that rescore runs call it.
    Returns the verdict and each detector's seconds."""
    results, seconds = run_detectors(
        config.detectors,
        features,
        labels,
        inputs,
        voters=config.voters,
        fallback=config.fallback_voters,
        contamination=config.contamination,
        random_state=random_state,
        knn_k=config.knn_k,
        sources=sources,
        dynamics=dynamics,
        response=response,
    )
    return combine(results, config.voters, labels, config.fallback_voters), seconds


__all__ = [
    "REGISTRY",
    "ActivationClustering",
    "Detector",
    "InputGap",
    "Responder",
    "InputNeighbours",
    "DetectorResult",
    "KNNLabelDisagreement",
    "LossDynamics",
    "Spectre",
    "SpectralSignature",
    "Verdict",
    "WhitenedClustering",
    "check_features",
    "combine",
    "detect",
    "write_verdict",
    "make_detector",
    "run_detectors",
]
