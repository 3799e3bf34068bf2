"""Benchmark: the built-in default (`sanitize run`: digits, BadNets 5 %, target 0) over red-team seeds
and torch thread counts, plus clean digits runs, detection only (no retraining).

The reference model, and so every figure, depends on the number of torch threads: float sums run in
another order. The test suite runs with one thread; `sanitize run` on a 2-core machine uses two.

    python -m bench digits-demo --seeds 0 1 2 3 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

from bench.records import ROOT

ONE_RUN = """
import json, sys, torch
from pathlib import Path
from sanitize.config import RedTeamConfig, RunConfig, Settings
from sanitize.pipeline import run_cleaning
from sanitize.workspace import Workspace
threads, seed, attack, home = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
torch.set_num_threads(threads)
redteam = None if attack == "none" else RedTeamConfig(attack=attack, seed=seed)
config = RunConfig(redteam=redteam, seed=seed, retrain=False)
s = run_cleaning(config, Workspace(Settings(home=home)), progress=False).summary
keys = ("quarantined", "n_poison", "recall", "precision")
print(json.dumps({k: s.get(k) for k in keys}))
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench digits-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--attacks", nargs="*", default=["badnets", "none"])
    args = ap.parse_args(argv)
    print("| attack | torch threads | seed | poisons | quarantined | recall | precision |")
    print("|---|---|---|---|---|---|---|")
    for attack in args.attacks:
        for threads in args.threads:
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as home:
                    # One process per run: torch's thread count is best set before any work.
                    out = subprocess.run(
                        [sys.executable, "-c", ONE_RUN, str(threads), str(seed), attack, home],
                        capture_output=True,
                        text=True,
                        check=True,
                        cwd=ROOT,
                    )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                recall = "-" if r["recall"] is None else f"{r['recall']:.3f}"
                precision = "-" if r["precision"] is None else f"{r['precision']:.3f}"
                print(
                    f"| {attack} | {threads} | {seed} | {r['n_poison'] or 0} | {r['quarantined']} | {recall} "
                    f"| {precision} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
