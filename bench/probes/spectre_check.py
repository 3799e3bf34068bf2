"""Probe (issue 3, SPECTRE as evidence in the default suite): SPECTRE's rate-free threshold on finished runs' features.

Runs ``Spectre`` with its defaults (no contamination) on each run's 60k features and reports what it
flagged against the truth: the red team's ``ground_truth.parquet`` when the run has one, else the run's
own quarantine (for the source benchmark's runs, whose poisons were planted outside the pipeline).

    python -m bench probe spectre-check data/bench/runs/<run> data/bench-sources/<setting>/runs/<run> ...
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from bench.records import poison_mask
from sanitize.detect import make_detector
from sanitize.features import load_features


def truth_of(run_dir: Path, ids: list[str]) -> tuple[np.ndarray, str]:
    """Per sample, whether it is a poison, and where that came from."""
    if (run_dir / "ground_truth.parquet").exists():
        return poison_mask(run_dir, ids), "red team's ground truth"
    table = pq.read_table(run_dir / "verdict.parquet", columns=["sample_id", "quarantine"])
    where = dict(zip(table["sample_id"].to_pylist(), table["quarantine"].to_pylist(), strict=True))
    return np.array([where[s] for s in ids]), "the run's quarantine"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench probe spectre-check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("run_dirs", type=Path, nargs="+")
    args = ap.parse_args(argv)
    print("| run | truth | positives | flagged | recall | flagged outside the truth | AUROC | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for run_dir in args.run_dirs:
        ids, feats, labels, _ = load_features(run_dir / "features.parquet")
        truth, source = truth_of(run_dir, ids)
        start = time.perf_counter()
        result = make_detector("spectre").detect(feats, labels)
        seconds = time.perf_counter() - start
        recall = f"{result.flags[truth].mean():.3f}" if truth.any() else "-"
        auroc = f"{roc_auc_score(truth, result.scores):.3f}" if truth.any() and not truth.all() else "-"
        print(
            f"| {run_dir.name} | {source} | {int(truth.sum()):,} | {int(result.flags.sum()):,} | {recall} "
            f"| {int((result.flags & ~truth).sum()):,} | {auroc} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
