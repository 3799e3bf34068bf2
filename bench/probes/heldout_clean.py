"""Probe: clean runs on held-out builds of the suite's datasets (issue 15, fourteenth step).

The suite's clean cells are one build of each dataset (``python -m bench datasets``, seed 0). Built
again at other seeds (``--seed N --out data/datasets-seedN``: the same recipe, other pixels: other
backgrounds, crops, colours and noise), they are clean data no decision was set on. Each build is
ingested into a home of its own (``data/transfer/NAME@datasets-seedN``) as a user would and cleaned
(``sanitize run`` without retraining, no red team); the row says how many were quarantined and which
voter's note decided each class it flagged. Records: ``bench/results/heldout_clean.json``.

    python -m bench datasets shapes --classes 3 --seed 1 --out data/datasets-seed1   # for each dataset
    python -m bench probe heldout-clean --seeds 1 2 --datasets shapes-2 shapes-3 shapes-5 icons-32-2000 emoji-32-2000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import pyarrow.parquet as pq

from bench.records import DATA, RESULTS, commit, read_json, stamp, write_json
from bench.transfer import DATASETS, HOMES, ingest
from sanitize.config import RunConfig, Settings
from sanitize.pipeline import run_cleaning
from sanitize.workspace import Workspace

OUT = RESULTS / "heldout_clean.json"


def clean_run(name: str, seed: int, code: str) -> dict:
    """One clean run of dataset ``name`` from the build at ``seed``; its record."""
    spec = DATASETS[name]
    built = DATA / f"datasets-seed{seed}"
    if spec.path is None:
        raise SystemExit(f"{name}: not built from files (no held-out build)")
    spec = replace(spec, path=built / spec.path.name)
    ws = Workspace(Settings(home=(HOMES / f"{name}@{built.name}").resolve()))
    ingest(ws, name, spec)
    start = time.perf_counter()
    result = run_cleaning(RunConfig(dataset=name, retrain=False), ws, progress=False)
    seconds = time.perf_counter() - start
    verdict = pq.read_table(result.run_dir / "verdict.parquet", columns=["quarantine"]).column("quarantine")
    quarantined = int(sum(verdict.to_pylist()))
    detection = read_json(result.run_dir / "detection.json", {})
    deciding = {
        f"{voter}, class {c}": note
        for voter, found in detection.get("detectors", {}).items()
        if voter in (*detection.get("voters", []), *detection.get("fallback_voters", []))
        for c, note in found.get("notes", {}).items()
        if note.startswith("poisoned")
    }
    n = len(verdict)
    return {
        "dataset": name,
        "build_seed": seed,
        "n_train": n,
        "quarantined": quarantined,
        "share": round(quarantined / n, 4),
        "looks_clean": result.summary.get("looks_clean"),
        "poisoned_notes": deciding,
        "run_id": result.run_id,
        "seconds": round(seconds, 1),
        "looked_at": False,
        **stamp(code),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench probe heldout-clean", description=__doc__)
    ap.add_argument("--seeds", nargs="+", type=int, required=True, help="build seeds (datasets-seedN must exist)")
    ap.add_argument("--datasets", nargs="+", required=True, help="suite datasets built from files")
    args = ap.parse_args(argv)
    code, rows = commit(), read_json(OUT, [])
    print("| dataset | build seed | quarantined | looks clean | voters that judged a class poisoned |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        for name in args.datasets:
            row = clean_run(name, seed, code)
            rows = [r for r in rows if (r["dataset"], r["build_seed"]) != (name, seed)] + [row]
            write_json(OUT, rows)
            why = "; ".join(f"{k}: {v[:160]}" for k, v in row["poisoned_notes"].items()) or "-"
            counts = f"{row['quarantined']} of {row['n_train']}"
            print(f"| {name} | {seed} | {counts} | {row['looks_clean']} | {why} |", flush=True)


if __name__ == "__main__":
    main()
