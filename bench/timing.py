"""Benchmark: a whole colour run's wall time, all stages, as a user runs it (issue 15's time bars).

A fresh home, the dataset ingested as the transfer suite ingests it (``bench.transfer.ingest``), then ``sanitize run
--dataset NAME --poison badnets --rate 0.05 --json``, timed as one process: the reference model,
features, detectors, quarantine, retraining, evaluation and export. Run it alone: another torch
process on the 2 cores slows both. The record (``bench/results/timing_<dataset>.json``) holds the
wall seconds, each stage's seconds and the run's figures.

    python -m bench timing                        # icons-32 (10,200 train images): bar 6 minutes
    python -m bench timing --dataset shapes-5     # the 1,500-image case: bar 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.records import DATA, RESULTS, commit, machine, today, write_json
from bench.transfer import DATASETS, ingest
from sanitize.config import Settings
from sanitize.workspace import Workspace

#: The bars of issue 15, by dataset (seconds).
BARS = {"icons-32": 360.0, "shapes-5": 120.0}


def sanitize(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANITIZE_HOME": str(home)}
    cli = shutil.which("sanitize")
    if cli is None:
        sys.exit("no `sanitize` command on PATH: install the package as README says")
    return subprocess.run([cli, *args], env=env, check=True, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench timing", description=__doc__)
    ap.add_argument("--dataset", default="icons-32", help="a transfer suite dataset (bench datasets builds it)")
    ap.add_argument("--home", type=Path, default=DATA / "timing")
    args = ap.parse_args(argv)
    if args.dataset not in DATASETS:
        sys.exit(f"unknown dataset {args.dataset!r}; the suite's: {', '.join(DATASETS)}")
    shutil.rmtree(args.home, ignore_errors=True)
    # Ingested as the transfer suite ingests it (its suppliers' folders and CSV table, its test split).
    ingest(Workspace(Settings(home=args.home)), args.dataset, DATASETS[args.dataset])
    start = time.perf_counter()
    out = sanitize(args.home, "run", "--dataset", args.dataset, "--poison", "badnets", "--rate", "0.05", "--json")
    wall = time.perf_counter() - start
    summary = json.loads(out.stdout)
    bar = BARS.get(args.dataset)
    record = {
        "dataset": args.dataset,
        "n_train": summary.get("ingested"),
        "wall_seconds": round(wall, 1),
        "bar_seconds": bar,
        "met": None if bar is None else wall < bar,
        "timings": summary.get("timings"),
        **{k: summary.get(k) for k in ("n_poison", "quarantined", "recall", "asr_before", "asr_after")},
        **{k: summary.get(k) for k in ("clean_acc_before", "clean_acc_after", "run_id")},
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "commit": commit(),
        "machine": machine(),
        "date": today(),
    }
    write_json(RESULTS / f"timing_{args.dataset}.json", record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
