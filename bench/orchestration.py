"""Benchmark: what orchestration costs. The built-in default (the digits demo: BadNets on 5 %, a
reference model, features, four detectors, quarantine, retraining, evaluation, export) run through
the Prefect flow (``sanitize run --prefect``: Prefect's local ephemeral API, one task per stage)
and the same stages called directly (``run_cleaning``), alternating in one process.

    python -m bench orchestration                 # 5 repetitions of each, about 5 minutes on 2 cores
    python -m bench orchestration --reps 3

One warm-up run of each comes first: the first flow run also starts Prefect's local API, which is
reported on its own. Each run's wall time is measured around the call; the stages' own time is the
sum of the run's stage timings, so ``wall - stages`` is what the caller adds around the stages.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bench.records import RESULTS, commit, machine, write_json
from sanitize.config import RedTeamConfig, RunConfig, Settings
from sanitize.demo import ingest_demo
from sanitize.pipeline import run_cleaning
from sanitize.workspace import Workspace


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench orchestration", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each way (after one warm-up each)")
    ap.add_argument("--home", type=Path, default=None, help="data folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=RESULTS / "orchestration.json")
    args = ap.parse_args(argv)

    home = args.home or Path(tempfile.mkdtemp(prefix="sanitize-orchestration-"))
    # Before Prefect is imported (flows/__init__ puts its home under SANITIZE_HOME): no server URL,
    # so the flow uses Prefect's ephemeral local API, as ``sanitize run --prefect`` does.
    os.environ["SANITIZE_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    # Prefect reads its settings when first imported: these two only after the environment above.
    import prefect

    from flows.clean import cleaning_flow

    config = RunConfig(redteam=RedTeamConfig())  # what ``sanitize run`` cleans with no arguments
    ws = Workspace(Settings(home=home))
    ingest_demo(ws, config.dataset)  # once, outside every timing

    def direct() -> dict[str, Any]:
        return run_cleaning(config, Workspace(Settings(home=home)), progress=False).summary

    def through_flow() -> dict[str, Any]:
        return cleaning_flow(config=config)

    ways = {"library": direct, "prefect_flow": through_flow}

    def timed(way: str) -> dict[str, Any]:
        start = time.perf_counter()
        summary = ways[way]()
        wall = time.perf_counter() - start
        stages = float(sum(summary["timings"].values()))
        row = {
            "way": way,
            "wall_s": round(wall, 3),
            "stages_s": round(stages, 3),
            "around_stages_s": round(wall - stages, 3),
            "run_id": summary["run_id"],
            "recall": summary.get("recall"),
            "quarantined": summary["quarantined"],
        }
        print(f"{way:>13}: wall {wall:6.2f} s, stages {stages:6.2f} s, around {wall - stages:5.2f} s", flush=True)
        return row

    load_before = os.getloadavg()
    started = datetime.now(UTC)
    warmup = [timed("library"), timed("prefect_flow")]
    runs: list[dict[str, Any]] = []
    for rep in range(args.reps):
        # ABBA: each way goes first in half the repetitions, so a drift in the machine's load cancels.
        order = ["library", "prefect_flow"] if rep % 2 == 0 else ["prefect_flow", "library"]
        for way in order:
            runs.append({**timed(way), "rep": rep})
    load_after = os.getloadavg()

    def median(way: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs if r["way"] == way), 3)

    lib_wall, flow_wall = median("library", "wall_s"), median("prefect_flow", "wall_s")
    result = {
        "benchmark": "orchestration overhead",
        "dataset": config.dataset,
        "config": config.model_dump(mode="json"),
        "reps": args.reps,
        "date": started.isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "prefect": prefect.__version__,
        "prefect_api": "ephemeral (local, in process)",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "first_flow_run_s": warmup[1]["wall_s"],
        "first_library_run_s": warmup[0]["wall_s"],
        "median_wall_s": {"library": lib_wall, "prefect_flow": flow_wall},
        "median_stages_s": {
            "library": median("library", "stages_s"),
            "prefect_flow": median("prefect_flow", "stages_s"),
        },
        "median_around_stages_s": {
            "library": median("library", "around_stages_s"),
            "prefect_flow": median("prefect_flow", "around_stages_s"),
        },
        "overhead_s": round(flow_wall - lib_wall, 3),
        "overhead_pct": round(100 * (flow_wall - lib_wall) / lib_wall, 1),
        "warmup": warmup,
        "runs": runs,
    }
    write_json(args.out, result)
    print(
        f"median wall: library {lib_wall:.2f} s, Prefect flow {flow_wall:.2f} s; "
        f"overhead {result['overhead_s']:.2f} s ({result['overhead_pct']:.1f} %); first flow run "
        f"{warmup[1]['wall_s']:.2f} s (starts the local API). Written to {args.out}"
    )


if __name__ == "__main__":
    main()
