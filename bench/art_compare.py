"""Side by side with IBM's adversarial-robustness-toolbox (ART) on the same features and samples.

Takes a finished red-team run (its ``features.parquet`` and ``ground_truth.parquet``), hands the
same penultimate-layer features to ART's SpectralSignatureDefense and ActivationDefence (default
settings, the true poison rate given, and ``cluster_analysis="relative-size"``) and to sanitize's
detectors, and prints one table: samples flagged, recall, precision, clean false-positive rate and
seconds, plus sanitize's recall at ART's number of flagged samples. ART's time is counted from the
features it is handed, not from a forward pass.

    pip install -e '.[bench]'
    python -m bench art data/bench/runs/<run-id>

ART reads activations from its model's last top-level module; the wrapper below is an identity
module over the features, so that module's output is exactly the features.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.records import RESULTS, poison_mask, read_json, write_json
from sanitize.detect import make_detector
from sanitize.evaluate.metrics import detection_figures
from sanitize.features import load_features


def art_classifier(dim: int, n_classes: int) -> Any:
    """An ART classifier whose model is the identity over ``dim`` features."""
    # ART is the optional ``bench`` extra: imported where it is used, so commands without it still run.
    from art.estimators.classification import PyTorchClassifier

    model = torch.nn.Sequential(torch.nn.Identity())
    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(dim,), nb_classes=n_classes)


def run_art(name: str, feats: np.ndarray, labels: np.ndarray, rate: float) -> tuple[np.ndarray, float]:
    """Flags (n,) bool of one ART configuration and its seconds."""
    # ART: the optional ``bench`` extra, as above.
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    n_classes = int(labels.max()) + 1
    onehot = np.eye(n_classes, dtype=np.float32)[labels]
    clf = art_classifier(feats.shape[1], n_classes)
    x = feats.astype(np.float32)
    start = time.perf_counter()
    if name == "art_spectral_default":
        _, clean = SpectralSignatureDefense(clf, x, onehot).detect_poison()
    elif name == "art_spectral_true_rate":
        _, clean = SpectralSignatureDefense(clf, x, onehot, expected_pp_poison=rate).detect_poison()
    elif name == "art_spectral_target_share":
        # Its best case: the poisons' share of the target class (an oracle no defender has).
        share = rate * len(labels) / max(np.bincount(labels).max(), 1)
        _, clean = SpectralSignatureDefense(clf, x, onehot, expected_pp_poison=share).detect_poison()
    elif name == "art_ac_default":
        _, clean = ActivationDefence(clf, x, onehot).detect_poison()  # 2 clusters, FastICA to 10 dims
    elif name == "art_ac_relative_size":
        _, clean = ActivationDefence(clf, x, onehot).detect_poison(cluster_analysis="relative-size")
    else:
        raise ValueError(name)
    return np.asarray(clean) == 0, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench art", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=RESULTS / "art_compare.json")
    args = ap.parse_args(argv)
    ids, feats, labels, _ = load_features(args.run_dir / "features.parquet")
    if not (args.run_dir / "ground_truth.parquet").exists():
        raise SystemExit(f"{args.run_dir}: no ground_truth.parquet (a red-team run is needed)")
    is_poison = poison_mask(args.run_dir, ids)
    context = json.loads((args.run_dir / "context.json").read_text())
    rt = context["config"]["redteam"]
    rows: list[dict[str, Any]] = []
    ours_scores: dict[str, np.ndarray] = {}
    for name in ("spectral", "activation_clustering", "whitened_clustering"):
        start = time.perf_counter()
        res = make_detector(name).detect(feats, labels)
        secs = time.perf_counter() - start
        ours_scores[name] = res.scores
        fig = detection_figures(is_poison, res.flags, res.scores)
        rows.append({"detector": f"sanitize_{name}", "seconds": round(secs, 2), **fig.as_dict()})
    for name in (
        "art_spectral_default",
        "art_spectral_true_rate",
        "art_spectral_target_share",
        "art_ac_default",
        "art_ac_relative_size",
    ):
        try:
            flags, secs = run_art(name, feats, labels, rt["rate"])
        except Exception as exc:  # ART's relative-size raises under NumPy 2 in some classes
            rows.append({"detector": name, "error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        fig = detection_figures(is_poison, flags, flags.astype(float))
        # sanitize's recall when it flags exactly as many samples as this ART configuration.
        order = np.argsort(-ours_scores["whitened_clustering"], kind="stable")[: int(flags.sum())]
        same_budget = float(is_poison[order].sum() / max(is_poison.sum(), 1))
        rows.append(
            {
                "detector": name,
                "seconds": round(secs, 2),
                **fig.as_dict(),
                "sanitize_recall_at_same_count": round(same_budget, 4),
            }
        )
    header = f"{'detector':32} {'flagged':>8} {'recall':>7} {'precision':>9} {'fpr':>7} {'seconds':>8}  ours@same"
    print(f"{rt['attack']} {rt['rate']:.1%} target {rt['target']}, {len(ids)} samples, {int(is_poison.sum())} poisons")
    print(header)
    for r in rows:
        if "error" in r:
            print(f"{r['detector']:32} error: {r['error']}")
            continue

        def f(v: Any) -> str:
            return "n/a" if v is None else f"{v:.4f}"

        print(
            f"{r['detector']:32} {r['quarantined']:>8} {f(r['recall']):>7} {f(r['precision']):>9} {f(r['fpr']):>7} "
            f"{r['seconds']:>8}  {r.get('sanitize_recall_at_same_count', '')}"
        )
    record = {
        "run_id": context["run_id"],
        "attack": rt["attack"],
        "rate": rt["rate"],
        "target": rt["target"],
        "n_train": len(ids),
        "n_poison": int(is_poison.sum()),
        "rows": rows,
    }
    setting = (rt["attack"], rt["rate"], rt["target"])
    old = [r for r in read_json(args.out) if (r["attack"], r["rate"], r["target"]) != setting]
    write_json(args.out, old + [record])


if __name__ == "__main__":
    main()
