"""Probe: score a finished run's features and images with the detectors of an older commit (issue 15).

When a rerun cell of the Fashion-MNIST matrix comes out worse than its record, two things changed: the
code and the reference model (a rerun trains a new one). This tells them apart: the run's features,
images and ground truth are scored by ``COMMIT``'s default detectors and verdict (its
``DetectConfig()``, no training dynamics if it read none), in a git worktree of that commit, beside
today's. Same figures from both: the model moved, not the code. bench/RESULTS.md, "The matrix's
worse cells: the model, not the code".

    python -m bench probe old-code --commit e97ec08 --home data/matrix-now --runs RUN [RUN ...]

Works for commits whose ``sanitize.detect`` has ``make_detector``, ``combine`` and
``DetectConfig().detectors / .voters / .knn_k`` (e97ec08 and later).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.records import ROOT, poison_mask
from sanitize.config import Settings
from sanitize.features import load_features, load_inputs
from sanitize.runs import RunContext
from sanitize.workspace import Workspace

#: Run inside the old commit's worktree: its detectors and verdict on the saved arrays; prints JSON.
OLD_SCORER = """
import json, sys
import numpy as np
from sanitize.config import DetectConfig
from sanitize.detect import combine, make_detector
feats, labels, inputs = (np.load(sys.argv[1] + n) for n in ("/feats.npy", "/labels.npy", "/inputs.npy"))
cfg = DetectConfig()
results = {}
for name in cfg.detectors:
    det = make_detector(name, knn_k=cfg.knn_k)
    if getattr(det, "data_space", "") == "dynamics":
        continue
    results[name] = det.detect(inputs if det.input_space else feats, labels)
verdict = combine(results, cfg.voters, labels)
np.save(sys.argv[1] + "/quarantine.npy", verdict.quarantine)
print(json.dumps({v: int(results[v].flags.sum()) for v in cfg.voters}))
"""


def score_with(commit: str, feats: np.ndarray, labels: np.ndarray, inputs: np.ndarray) -> tuple[np.ndarray, str]:
    """``commit``'s verdict (quarantine (n,) bool) and its voters' flag counts on these arrays."""
    with tempfile.TemporaryDirectory() as tmp:
        tree, arrays = Path(tmp) / "tree", Path(tmp) / "arrays"
        arrays.mkdir()
        for name, a in (("feats", feats), ("labels", labels), ("inputs", inputs)):
            np.save(arrays / f"{name}.npy", a)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), commit], check=True)
        try:
            out = subprocess.run(
                [sys.executable, "-c", OLD_SCORER, str(arrays)],
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"},
                check=True,
                capture_output=True,
                text=True,
            )
            return np.load(arrays / "quarantine.npy"), out.stdout.strip().splitlines()[-1]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench probe old-code", description=__doc__)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--home", type=Path, required=True, help="the workspace home the runs are in")
    ap.add_argument("--runs", nargs="+", required=True)
    args = ap.parse_args(argv)
    ws = Workspace(Settings(home=args.home))
    print(f"| run | poisons | {args.commit}: quarantined | recall | its voters' flags |")
    print("|---|---|---|---|---|")
    for run_id in args.runs:
        run_dir = ws.store.run_dir(run_id)
        ids, feats, labels, _ = load_features(run_dir / "features.parquet", split="train")
        inputs = load_inputs(ws.store, RunContext.load(ws, run_id).manifest(ws), ids)
        poisons = poison_mask(run_dir, ids)
        quarantine, voters = score_with(args.commit, feats, labels, inputs)
        recall = float((quarantine & poisons).sum() / poisons.sum()) if poisons.any() else float("nan")
        print(f"| {run_id} | {int(poisons.sum())} | {int(quarantine.sum())} | {recall:.3f} | {json.loads(voters)} |")


if __name__ == "__main__":
    main()
