"""Benchmark: complete cleaning runs on Fashion-MNIST (60,000 training images) with BadNets poisoning.

For each poison rate, one red-team run (3x3 white patch at the bottom-right corner, poisons drawn
from classes other than the target, relabelled to it), plus one run on the unpoisoned data (its
reference model is "the same model trained on the unpoisoned data"). No poison rate is given to the
detectors. Every run writes records (the combined verdict and every detector alone) to
``bench/results/fashion_mnist.json`` as soon as it finishes.

    apt-get install -y dataset-fashion-mnist
    python bench/fashion_mnist.py                       # clean + 5%, 1%, 10% (about 25 min on 2 cores)
    python bench/fashion_mnist.py --rates 0.05 --no-clean
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sanitize.config import RedTeamConfig, RunConfig, Settings  # noqa: E402
from sanitize.evaluate.metrics import detection_figures  # noqa: E402
from sanitize.ingest.core import ingest_path  # noqa: E402
from sanitize.pipeline import RunResult, run_cleaning  # noqa: E402
from sanitize.store import atomic_write_json  # noqa: E402
from sanitize.workspace import Workspace  # noqa: E402

COMMIT = ""  # set in main(), before the runs: the code that ran, not what the tree holds later
FMNIST = Path("/usr/share/datasets/fashion-mnist")
DATASET = "fashion-mnist"


def commit() -> str:
    """The checkout's short commit (``+dirty`` when sanitize/ has changes); ``SANITIZE_COMMIT`` where a
    copy of the tree travels without its git history (a borrowed GPU machine)."""
    import os

    if os.environ.get("SANITIZE_COMMIT"):
        return os.environ["SANITIZE_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "sanitize"], capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> str:
    """Host, cores, and where torch trains: the CUDA device's name when there is one."""
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    where = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"
    python = platform.python_version()
    return f"{platform.node()}: {os.cpu_count()} cpu {cpu}, torch {torch.__version__} {where}, {python}"


def records_for(
    result: RunResult, attack: str, rate: float, target: int | None, seconds: float
) -> list[dict[str, Any]]:
    """One record for the combined verdict and one per detector."""
    s = result.summary
    verdict = pq.read_table(result.run_dir / "verdict.parquet")
    base = {
        "dataset": DATASET,
        "attack": attack,
        "rate": rate,
        "target": target,
        "n_train": s["ingested"],
        "run_id": result.run_id,
        "commit": COMMIT,
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "seconds": round(seconds, 1),
        "timings": s["timings"],
        "estimated_poison_rate": s["estimated_poison_rate"],
    }
    truth_path = result.run_dir / "ground_truth.parquet"
    if truth_path.exists():
        truth = pq.read_table(truth_path)
        order = {sid: i for i, sid in enumerate(verdict.column("sample_id").to_pylist())}
        idx = np.array([order[sid] for sid in truth.column("sample_id").to_pylist()])
        is_poison = truth.column("is_poison").to_numpy()
    else:
        idx = np.arange(verdict.num_rows)
        is_poison = np.zeros(verdict.num_rows, dtype=bool)
    detectors = ["combined"] + [c[: -len("_flag")] for c in verdict.column_names if c.endswith("_flag")]
    out = []
    for det in detectors:
        flag_col, score_col = (
            ("quarantine", "suspicion_score") if det == "combined" else (f"{det}_flag", f"{det}_score")
        )
        fig = detection_figures(
            is_poison, verdict.column(flag_col).to_numpy()[idx], verdict.column(score_col).to_numpy()[idx]
        )
        rec = {**base, "detector": det, **fig.as_dict()}
        if det == "combined":
            rec.update({k: s.get(k) for k in ("clean_acc_before", "clean_acc_after", "asr_before", "asr_after")})
        else:
            rec.update({"clean_acc_before": None, "clean_acc_after": None, "asr_before": None, "asr_after": None})
        out.append(rec)
    return out


def save(out: Path, new: list[dict[str, Any]]) -> None:
    """Replace earlier records of the same setting and detector; keep the rest."""
    old = json.loads(out.read_text()) if out.exists() else []
    keys = {(r["attack"], r["rate"], r["target"], r["detector"]) for r in new}
    kept = [r for r in old if (r["attack"], r["rate"], r["target"], r["detector"]) not in keys]
    atomic_write_json(out, kept + new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="*", default=[0.05, 0.01, 0.10])
    ap.add_argument("--attack", default="badnets", choices=["badnets", "blend"])
    ap.add_argument("--target", type=int, default=0)
    ap.add_argument("--no-clean", action="store_true", help="skip the run on unpoisoned data")
    ap.add_argument("--home", type=Path, default=ROOT / "data" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fashion_mnist.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    global COMMIT
    COMMIT = commit()
    if not FMNIST.is_dir():
        sys.exit(f"{FMNIST} is missing: apt-get install -y dataset-fashion-mnist")
    ws = Workspace(Settings(home=args.home.resolve()))
    rep = ingest_path(ws.catalog, ws.store, dataset=DATASET, path=FMNIST, source="zalando-research", actor="bench")
    print(f"ingested {rep.n_train} train + {rep.n_test} test samples, version {rep.version_id}", flush=True)
    settings: list[tuple[str, float, int | None]] = [] if args.no_clean else [("none", 0.0, None)]
    settings += [(args.attack, r, args.target) for r in args.rates]
    for attack, rate, target in settings:
        redteam = None if attack == "none" else RedTeamConfig(attack=attack, rate=rate, target=target, seed=args.seed)
        config = RunConfig(dataset=DATASET, redteam=redteam, seed=args.seed)
        start = time.perf_counter()
        result = run_cleaning(config, ws, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        recs = records_for(result, attack, rate, target, seconds)
        save(args.out, recs)
        c = recs[0]
        print(
            f"{attack} {rate:.1%}: quarantined {c['quarantined']} (poisons {c['n_poison']}), recall {c['recall']}, "
            f"precision {c['precision']}, fpr {c['fpr']:.4f}, auroc {c['auroc']}, acc {c['clean_acc_before']} -> "
            f"{c['clean_acc_after']}, asr {c['asr_before']} -> {c['asr_after']}, {seconds:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
