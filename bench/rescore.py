"""Benchmark helper: score the matrix's finished runs again with the current detectors, without retraining.

A matrix cell takes minutes to hours (training, retraining); a change to the detectors takes seconds to
score on the features and images a cell's run left behind. For every cell in ``bench/results/matrix.json``
this runs the default detectors and the combined verdict on the run's stored features (and images, for
input-space detectors) and compares the quarantine with the one the cell recorded: how many samples
differ, and the recall, precision and AUROC the current detectors reach. Where the quarantine is the
same, the cell's retraining figures (clean accuracy, ASR) hold for the current detectors too.

    python bench/rescore.py                      # every cell, records in bench/results/matrix_rescore.json
    python bench/rescore.py --only sig:0.03
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fashion_mnist import commit, machine  # noqa: E402
from bench.matrix import load, local_cells  # noqa: E402
from sanitize.config import DetectConfig, Settings  # noqa: E402
from sanitize.detect import combine, run_detectors  # noqa: E402
from sanitize.evaluate.metrics import detection_figures  # noqa: E402
from sanitize.features import load_features, load_inputs  # noqa: E402
from sanitize.pipeline import RunContext  # noqa: E402
from sanitize.store import atomic_write_json  # noqa: E402
from sanitize.workspace import Workspace  # noqa: E402


def rescore(ws: Workspace, cell: dict[str, Any]) -> dict[str, Any]:
    run_dir = ws.store.run_dir(cell["run_id"])
    ctx = RunContext.load(ws, cell["run_id"])
    ids, feats, labels, _ = load_features(run_dir / "features.parquet", split="train")
    inputs = load_inputs(ws.store, ctx.manifest(ws), ids)
    cfg = DetectConfig()
    results, seconds = run_detectors(
        cfg.detectors, feats, labels, lambda: inputs, voters=cfg.voters, fallback=cfg.fallback_voters, knn_k=cfg.knn_k
    )
    verdict = combine(results, cfg.voters, labels, cfg.fallback_voters)
    recorded = pq.read_table(run_dir / "verdict.parquet", columns=["sample_id", "quarantine"])
    if recorded.column("sample_id").to_pylist() != ids:
        raise RuntimeError(f"{run_dir}: verdict and features list samples in different orders")
    before = recorded.column("quarantine").to_numpy(zero_copy_only=False)
    is_poison = np.zeros(len(ids), dtype=bool)
    truth_path = run_dir / "ground_truth.parquet"
    if truth_path.exists():
        truth = pq.read_table(truth_path)
        gt = dict(zip(truth.column("sample_id").to_pylist(), truth.column("is_poison").to_pylist(), strict=True))
        is_poison = np.array([gt[s] for s in ids])
    fig = detection_figures(is_poison, verdict.quarantine, verdict.suspicion_score)
    return {
        "attack": cell["attack"],
        "rate": cell["rate"],
        "run_id": cell["run_id"],
        "cell_commit": cell["records"][0]["commit"],
        "quarantined_before": int(before.sum()),
        "quarantined_now": int(verdict.quarantine.sum()),
        "added": int((verdict.quarantine & ~before).sum()),
        "dropped": int((before & ~verdict.quarantine).sum()),
        "flagged_by_voter": {v: int(verdict.results[v].flags.sum()) for v in verdict.voters},
        "seconds": seconds,
        **fig.as_dict(),
        "commit": commit(),
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="cells as ATTACK:RATE (default: every cell)")
    ap.add_argument("--home", type=Path, default=ROOT / "data" / "bench")
    ap.add_argument("--matrix", type=Path, default=ROOT / "bench" / "results" / "matrix.json")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "matrix_rescore.json")
    args = ap.parse_args()
    ws = Workspace(Settings(home=args.home.resolve()))
    rows = []
    for cell in local_cells(ws, load(args.matrix), args.only):
        row = rescore(ws, cell)
        rows.append(row)
        print(
            f"{row['attack']:15} {row['rate']:6.1%}  quarantined {row['quarantined_before']:6,} -> "
            f"{row['quarantined_now']:6,} (+{row['added']}, -{row['dropped']})  recall {row['recall']}  "
            f"precision {row['precision']}  by voter {row['flagged_by_voter']}",
            flush=True,
        )
    atomic_write_json(args.out, rows)


if __name__ == "__main__":
    main()
