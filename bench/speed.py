"""Benchmark: detector speed on the same 60,000 x d features, sanitize against IBM's ART.

Loads the features of a finished run and times, in one process, each of sanitize's detectors, the
whole default suite with the combined verdict, and ART's SpectralSignatureDefense and
ActivationDefence with default settings. The suite includes ``input_gap``, which reads the run's
images (loaded once beforehand, as the pipeline does; the load is timed apart), and each detector is
handed the run's side inputs as the pipeline's detect stage hands them: each sample's source, its
training loss per epoch, and the reference model with the training images (input gap's trigger
search and response test run the model's forward passes, on the CPU here, inside the timed
detector; loading the model and reading the images once is timed apart). ART is handed the
features: its classifier's ``get_activations`` is replaced by one that returns them, so its time is
its own analysis and not a forward pass. Every time is the median of ``--repeats`` runs after an
untimed one; sanitize's spectral signatures and activation clustering are timed right before ART's
counterparts.

    pip install -e '.[bench]'
    python -m bench speed data/bench/runs/<run-id>
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.art_compare import art_classifier
from bench.data import run_inputs, run_side_inputs
from bench.records import RESULTS, commit, read_json, stamp, write_json
from sanitize.config import DetectConfig
from sanitize.detect import detect, make_detector, run_detectors
from sanitize.features import load_features


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def warm_medians(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of two functions, each timed in a block of ``repeats`` calls after an untimed one.

    Blocks, not alternation: right after ART's scikit-learn calls, its OpenMP threads still spin on
    both cores and the next call pays for it (our activation clustering: 44 -> 59 ms), and after half
    a second idle any call pays about 60 ms to wake the machine (ours 44 -> 100-120 ms, ART's 0.53 ->
    0.60 s). A warm block measures each method's own work.
    """
    first()  # each warm-up right before its own block, so ART's warm-up cannot spill into ours
    first_seconds = median_seconds(first, repeats)
    second()
    return first_seconds, median_seconds(second, repeats)


def handed(feats: np.ndarray, labels: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    """An ART classifier whose activations are the given features, with no forward pass."""
    n_classes = int(labels.max()) + 1
    clf = art_classifier(feats.shape[1], n_classes)
    clf.get_activations = lambda x, *args, **kwargs: x  # the features are the activations
    return clf, feats, np.eye(n_classes, dtype=np.float32)[labels]


def art_spectral(feats: np.ndarray, labels: np.ndarray) -> None:
    # ART: the optional ``bench`` extra, imported where it is used.
    from art.defences.detector.poison import SpectralSignatureDefense

    clf, x, y = handed(feats, labels)
    SpectralSignatureDefense(clf, x, y).detect_poison()


def art_ac(feats: np.ndarray, labels: np.ndarray) -> None:
    # ART: the optional ``bench`` extra, imported where it is used.
    from art.defences.detector.poison import ActivationDefence

    clf, x, y = handed(feats, labels)
    ActivationDefence(clf, x, y).detect_poison()


def suite(feats: np.ndarray, inputs: np.ndarray, labels: np.ndarray, side: dict[str, Any]) -> None:
    """The default detectors and the combined verdict, as the pipeline's detect stage runs them, with
    the run's side inputs (sources, training dynamics, the reference model's response)."""
    detect(DetectConfig(), feats, labels, lambda: inputs, **{k: (lambda v=v: v) for k, v in side.items()})


def one(name: str, feats: np.ndarray, inputs: np.ndarray, labels: np.ndarray, side: dict[str, Any]) -> None:
    """One detector as the pipeline runs it (:func:`~sanitize.detect.run_detectors`, side inputs too)."""
    run_detectors([name], feats, labels, lambda: inputs, **{k: (lambda v=v: v) for k, v in side.items()})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "speed.json")
    args = ap.parse_args(argv)
    ids, feats, labels, _ = load_features(args.run_dir / "features.parquet", split="train")
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    start = time.perf_counter()
    inputs = run_inputs(args.run_dir, ids)
    timings: dict[str, float] = {"sanitize_load_inputs": time.perf_counter() - start}
    start = time.perf_counter()
    side = run_side_inputs(args.run_dir, ids)
    side["response"].images(np.arange(len(ids)))  # the training images, read once as the pipeline reads them
    timings["sanitize_load_side_inputs"] = time.perf_counter() - start
    for name in DetectConfig().detectors:
        timings[f"sanitize_{name}"] = median_seconds(lambda n=name: one(n, feats, inputs, labels, side), args.repeats)
    timings["sanitize_default_suite"] = median_seconds(lambda: suite(feats, inputs, labels, side), args.repeats)
    # Each comparison back to back, in warm blocks (see warm_medians).
    for ours, art_name, art_fn in (
        ("spectral", "art_spectral_default", art_spectral),
        ("activation_clustering", "art_ac_default", art_ac),
    ):
        detector = make_detector(ours)
        timings[f"sanitize_{ours}"], timings[art_name] = warm_medians(
            lambda d=detector: d.detect(feats, labels), lambda f=art_fn: f(feats, labels), args.repeats
        )
    ratios = {
        "spectral": timings["art_spectral_default"] / timings["sanitize_spectral"],
        "activation_clustering": timings["art_ac_default"] / timings["sanitize_activation_clustering"],
    }
    for name, secs in timings.items():
        print(f"{name:32} {secs:8.3f} s")
    for name, ratio in ratios.items():
        print(f"ART / sanitize, {name}: {ratio:.1f}x")
    # The record joins the earlier ones in --out: ART's own time moves from run to run, so the ratio is
    # worth several measurements.
    earlier = read_json(args.out)
    earlier = earlier if isinstance(earlier, list) else [earlier]
    write_json(
        args.out,
        earlier
        + [
            {
                "run_dir": str(args.run_dir),
                "n": int(feats.shape[0]),
                "d": int(feats.shape[1]),
                "input_d": int(inputs.shape[1]),
                "repeats": args.repeats,
                "seconds": {k: round(v, 4) for k, v in timings.items()},
                "art_over_sanitize": {k: round(v, 2) for k, v in ratios.items()},
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                **stamp(commit()),
            }
        ],
    )


if __name__ == "__main__":
    main()
