"""Probe: suite cells run without retraining (detection only), then rescored with today's detectors
(issue 15, sixth step). Quicker than ``python -m bench transfer`` (no retraining, no ART), for the
cells a change to the detectors is meant to move and the clean runs it must not.

    python -m bench probe detect-runs emoji-32-2000:sig:0.01:0 emoji-32-2000:none:0:0   # run (skips done)
    python -m bench probe detect-runs --rescore                                         # every run listed

Cells are ``DATASET:ATTACK:RATE:SEED`` (target class 0). Each run's id is kept in
``data/detect_runs.json``; the rescore prints the quarantine as run and now, recall and precision.
"""

from __future__ import annotations

import argparse
import json
import time

from bench.records import DATA
from bench.rescore import rescore
from bench.transfer import DATASETS, home_of, ingest
from sanitize.config import DetectConfig, RedTeamConfig, RunConfig
from sanitize.pipeline import run_cleaning

RUNS = DATA / "detect_runs.json"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench probe detect-runs", description=__doc__.split("\n")[0])
    ap.add_argument("cells", nargs="*", help="DATASET:ATTACK:RATE:SEED")
    ap.add_argument("--rescore", action="store_true", help="rescore every run listed (or the cells given)")
    args = ap.parse_args(argv)
    done = json.loads(RUNS.read_text()) if RUNS.exists() else {}
    if args.rescore:
        for key in args.cells or list(done):
            ws = home_of(key.split(":")[0])
            start = time.perf_counter()
            r = rescore(ws, done[key], DetectConfig(), 0)
            print(
                f"{key:38} quarantined {r['quarantined_before']:4} -> {r['quarantined_now']:4} recall {r['recall']} "
                f"precision {r['precision']} by voter {r['flagged_by_voter']} {time.perf_counter() - start:.0f} s",
                flush=True,
            )
        return
    for key in args.cells:
        name, attack, rate, seed = key.split(":")
        if key in done:
            continue
        if name not in DATASETS:
            raise SystemExit(f"unknown suite dataset {name!r} in {key!r}; known: {sorted(DATASETS)}")
        ws = home_of(name)
        ingest(ws, name, DATASETS[name])
        redteam = None if attack == "none" else RedTeamConfig(attack=attack, rate=float(rate), target=0, seed=int(seed))
        start = time.perf_counter()
        result = run_cleaning(
            RunConfig(dataset=name, redteam=redteam, seed=int(seed), retrain=False), ws, progress=False
        )
        done = json.loads(RUNS.read_text()) if RUNS.exists() else {}
        done[key] = result.run_id
        RUNS.parent.mkdir(parents=True, exist_ok=True)
        RUNS.write_text(json.dumps(done, indent=1))
        s = result.summary
        print(
            f"{key} {result.run_id} {time.perf_counter() - start:.0f} s quarantined {s.get('quarantined')} "
            f"recall {s.get('recall')} ASR before {s.get('asr_before')}",
            flush=True,
        )


if __name__ == "__main__":
    main()
