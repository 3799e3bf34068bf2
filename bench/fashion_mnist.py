"""Benchmark: complete cleaning runs on Fashion-MNIST (60,000 training images) with BadNets poisoning.

For each poison rate, one red-team run (3x3 white patch at the bottom-right corner, poisons drawn
from classes other than the target, relabelled to it), plus one run on the unpoisoned data (its
reference model is "the same model trained on the unpoisoned data"). No poison rate is given to the
detectors. Every run writes records (the combined verdict and every detector alone) to
``bench/results/fashion_mnist.json`` as soon as it finishes.

    apt-get install -y dataset-fashion-mnist
    python -m bench fashion-mnist                       # clean + 5%, 1%, 10% (about 25 min on 2 cores)
    python -m bench fashion-mnist --rates 0.05 --no-clean
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench.data import DATASET, ingest_fmnist, require_fmnist, workspace
from bench.records import DATA, RESULTS, commit, read_json, records_for, write_json
from sanitize.config import RedTeamConfig, RunConfig
from sanitize.pipeline import run_cleaning


def save(out: Path, new: list[dict[str, Any]]) -> None:
    """Replace earlier records of the same setting and detector; keep the rest."""
    keys = {(r["attack"], r["rate"], r["target"], r["detector"]) for r in new}
    kept = [r for r in read_json(out) if (r["attack"], r["rate"], r["target"], r["detector"]) not in keys]
    write_json(out, kept + new)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench fashion-mnist", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rates", type=float, nargs="*", default=[0.05, 0.01, 0.10])
    ap.add_argument("--attack", default="badnets", choices=["badnets", "blend"])
    ap.add_argument("--target", type=int, default=0)
    ap.add_argument("--no-clean", action="store_true", help="skip the run on unpoisoned data")
    ap.add_argument("--home", type=Path, default=DATA / "bench")
    ap.add_argument("--out", type=Path, default=RESULTS / "fashion_mnist.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    code = commit()  # before the runs: the code that ran, not what the tree holds later
    require_fmnist()
    ws = workspace(args.home)
    rep = ingest_fmnist(ws)
    print(f"ingested {rep.n_train} train + {rep.n_test} test samples, version {rep.version_id}", flush=True)
    settings: list[tuple[str, float, int | None]] = [] if args.no_clean else [("none", 0.0, None)]
    settings += [(args.attack, r, args.target) for r in args.rates]
    for attack, rate, target in settings:
        redteam = None if attack == "none" else RedTeamConfig(attack=attack, rate=rate, target=target, seed=args.seed)
        config = RunConfig(dataset=DATASET, redteam=redteam, seed=args.seed)
        start = time.perf_counter()
        result = run_cleaning(config, ws, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        recs = records_for(result, dataset=DATASET, attack=attack, rate=rate, target=target, seconds=seconds, code=code)
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
