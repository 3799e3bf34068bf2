"""Benchmark helper: score finished runs again with today's detectors, without retraining.

A matrix cell takes minutes to hours (training, retraining); a change to the detectors takes seconds to
score on the features and images a run left behind. This runs the detectors and the combined verdict
on a run's stored features (and images, for input-space detectors) and compares the quarantine with
the one the run recorded in its ``verdict.parquet``: how many samples were quarantined before and
now, how many were added and dropped, which detectors' flags changed, and the recall, precision and
AUROC the detectors reach now (where the run has a ``ground_truth.parquet``). Where the quarantine is
the same, the run's retraining figures (clean accuracy, ASR) hold for today's detectors too.

Two ways to choose the runs:

- the matrix's cells (the default): every cell of ``--matrix`` whose run is in ``--home``, scored
  with today's default detectors (``DetectConfig()``, random state 0): would a matrix rerun
  quarantine the same?
- ``--runs``: runs found in ``--home`` (``all``: every run folder with ``features.parquet`` and
  ``verdict.parquet``), each scored as its detect stage did, with the detect config and seed the run
  recorded: does today's code quarantine what the run did, sample for sample?

Run it with the thread count the runs had (``OMP_NUM_THREADS`` unset on the same machine, as
``sanitize run`` left it): float sums in another order move some scores in their last digits (the
digits demo's spectral scores by up to 3e-4 with one thread against two), and a flag on a threshold
could move with them.

    python -m bench rescore                      # every cell, records in bench/results/matrix_rescore.json
    python -m bench rescore --only sig:0.03
    python -m bench rescore --home data/baseline --runs all --out /tmp/rescore.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bench.data import workspace
from bench.records import DATA, RESULTS, commit, local_cells, poison_mask, read_json, stamp, write_json
from sanitize.config import DetectConfig
from sanitize.detect import detect
from sanitize.evaluate.metrics import detection_figures
from sanitize.features import load_features, load_inputs, load_sources
from sanitize.pipeline import responder
from sanitize.runs import RunContext
from sanitize.training import dynamics_path, load_dynamics
from sanitize.workspace import Workspace


def rescore(ws: Workspace, run_id: str, cfg: DetectConfig, random_state: int) -> dict[str, Any]:
    """Run ``cfg``'s detectors on run ``run_id``'s stored features; the quarantine against the recorded one."""
    run_dir = ws.store.run_dir(run_id)
    ctx = RunContext.load(ws, run_id)
    ids, feats, labels, _ = load_features(run_dir / "features.parquet", split="train")
    verdict, seconds = detect(
        cfg,
        feats,
        labels,
        lambda: load_inputs(ws.store, ctx.manifest(ws), ids),
        random_state=random_state,
        sources=lambda: load_sources(ws.store, ctx.manifest(ws), ids),
        dynamics=lambda: load_dynamics(dynamics_path(run_dir / "model_reference.pt"), ids),
        response=lambda: responder(ws, ctx, ids),
    )
    recorded = pq.read_table(run_dir / "verdict.parquet")
    if recorded.column("sample_id").to_pylist() != ids:
        raise RuntimeError(f"{run_dir}: verdict and features list samples in different orders")
    before = recorded.column("quarantine").to_numpy(zero_copy_only=False)
    score_before = recorded.column("suspicion_score").to_numpy(zero_copy_only=False)
    flags_changed = {
        name: int((recorded.column(f"{name}_flag").to_numpy(zero_copy_only=False) != result.flags).sum())
        for name, result in verdict.results.items()  # a fallback voter's flags as it deferred, as recorded
        if f"{name}_flag" in recorded.column_names
    }
    score_changes = {
        name: largest_change(recorded.column(f"{name}_score").to_numpy(zero_copy_only=False), result.scores)
        for name, result in verdict.results.items()
        if f"{name}_score" in recorded.column_names
    }
    fig = detection_figures(poison_mask(run_dir, ids), verdict.quarantine, verdict.suspicion_score)
    return {
        "run_id": run_id,
        "dataset": ctx.dataset,
        "quarantined_before": int(before.sum()),
        "quarantined_now": int(verdict.quarantine.sum()),
        "added": int((verdict.quarantine & ~before).sum()),
        "dropped": int((before & ~verdict.quarantine).sum()),
        "suspicion_max_abs_change": largest_change(score_before, verdict.suspicion_score),
        "flags_changed_by_detector": flags_changed,
        "score_max_abs_change_by_detector": score_changes,
        "not_recorded": sorted(set(verdict.results) - set(flags_changed)),
        "flagged_by_voter": {v: int(verdict.results[v].flags.sum()) for v in verdict.voters},
        "seconds": seconds,
        **fig.as_dict(),
    }


def largest_change(before: np.ndarray, now: np.ndarray) -> float:
    """The largest absolute difference between two score arrays (n,); equal values, infinities
    included, count as no change."""
    before, now = np.asarray(before, dtype=np.float64), np.asarray(now, dtype=np.float64)
    return float(np.max(np.where(before == now, 0.0, np.abs(before - now)), initial=0.0))


def finished_runs(ws: Workspace, runs: list[str]) -> list[str]:
    """The run ids asked for (``all``: every run folder of ``ws`` with features and a verdict), in order."""
    if runs != ["all"]:
        return runs
    found = [p for p in sorted((ws.store.home / "runs").glob("*")) if (p / "verdict.parquet").is_file()]
    return [p.name for p in found if (p / "features.parquet").is_file()]


def print_row(where: str, row: dict[str, Any]) -> None:
    changed = {k: v for k, v in row["flags_changed_by_detector"].items() if v}
    print(
        f"{where}  quarantined {row['quarantined_before']:6,} -> {row['quarantined_now']:6,} "
        f"(+{row['added']}, -{row['dropped']})  recall {row['recall']}  precision {row['precision']}  "
        f"flags changed {changed or 'none'}  by voter {row['flagged_by_voter']}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench rescore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", nargs="*", default=None, help="cells as ATTACK:RATE (default: every cell)")
    ap.add_argument(
        "--runs", nargs="+", default=None, help="run ids in --home, or 'all', instead of the matrix's cells"
    )
    ap.add_argument("--home", type=Path, default=DATA / "bench")
    ap.add_argument("--matrix", type=Path, default=RESULTS / "matrix.json")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/matrix_rescore.json for cells")
    args = ap.parse_args(argv)
    if args.runs is not None and args.only is not None:
        ap.error("--only selects matrix cells; --runs selects runs: give one of them")
    if args.runs is not None and args.out is None:
        ap.error("--runs needs --out (bench/results/matrix_rescore.json holds the matrix's cells)")
    ws = workspace(args.home)
    code = commit()
    rows = []
    if args.runs is not None:
        for run_id in finished_runs(ws, args.runs):
            ctx = RunContext.load(ws, run_id)
            row = {**rescore(ws, run_id, ctx.config.detect, ctx.config.seed), **stamp(code)}
            rows.append(row)
            print_row(f"{run_id} {row['dataset']:15}", row)
        same = sum(r["added"] == r["dropped"] == 0 for r in rows)
        print(f"{same} of {len(rows)} runs quarantine the same samples as recorded", flush=True)
    else:
        for cell in local_cells(ws, read_json(args.matrix), args.only):
            found = rescore(ws, cell["run_id"], DetectConfig(), 0)
            row = {"attack": cell["attack"], "rate": cell["rate"], "cell_commit": cell["records"][0]["commit"]}
            row.update(found)
            row.update(stamp(code))
            rows.append(row)
            print_row(f"{row['attack']:15} {row['rate']:6.1%}", row)
    write_json(args.out or RESULTS / "matrix_rescore.json", rows)


if __name__ == "__main__":
    main()
