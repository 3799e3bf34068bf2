"""Do two releases clean the same way? Compare the runs of two data folders, sample for sample.

Runs are paired by dataset, ingested version and configuration (its fingerprint), in start order, so
the same commands typed into two homes with two releases meet. For each pair: the summary's figures
(quarantined, recall, precision, AUROC, accuracies, ASR, the red-team and clean version ids; run ids,
timings, paths, commit and machine left aside), and the verdict (``verdict.parquet``) column by
column: the quarantine, the suspicion score and every detector's flag, score and threshold.

    # the same runs with each release, each into its own home (bench/RESULTS.md has the list), then
    python -m bench compare-runs data/baseline data/after --out bench/results/redesign_equivalence.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bench.records import RESULTS, commit, machine, today, write_json

IGNORED = {"run_id", "timings", "seconds", "model_reference", "model_clean", "commit", "machine"}


def completed_runs(home: Path) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Each completed run's summary, grouped by (dataset, ingested version, config fingerprint)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for summary_path in sorted((home / "runs").glob("*/summary.json")):
        context = json.loads((summary_path.parent / "context.json").read_text())
        summary = json.loads(summary_path.read_text())
        key = (summary["dataset"], summary["ingested_version"], json.dumps(context["config"], sort_keys=True))
        groups[key].append({**summary, "_dir": str(summary_path.parent)})
    return groups


def compare_verdicts(before: Path, after: Path) -> dict[str, Any]:
    a, b = pq.read_table(before / "verdict.parquet"), pq.read_table(after / "verdict.parquet")
    if a.column("sample_id").to_pylist() != b.column("sample_id").to_pylist():
        return {"same_samples": False}
    qa = a.column("quarantine").to_numpy(zero_copy_only=False)
    qb = b.column("quarantine").to_numpy(zero_copy_only=False)
    sa = np.nan_to_num(a.column("suspicion_score").to_numpy(), posinf=0, neginf=0)
    sb = np.nan_to_num(b.column("suspicion_score").to_numpy(), posinf=0, neginf=0)
    return {
        "same_samples": True,
        "quarantined_before": int(qa.sum()),
        "quarantined_after": int(qb.sum()),
        "added": int((qb & ~qa).sum()),
        "dropped": int((qa & ~qb).sum()),
        "max_score_difference": float(np.abs(sa - sb).max()) if len(sa) else 0.0,
        "columns_only_one_has": sorted(set(a.column_names) ^ set(b.column_names)),
        "columns_that_differ": [
            c for c in a.column_names if c in b.column_names and not a.column(c).equals(b.column(c))
        ],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench compare-runs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("before", type=Path, help="the data folder the first release's runs wrote")
    ap.add_argument("after", type=Path, help="the data folder the second release's runs wrote")
    ap.add_argument("--out", type=Path, default=RESULTS / "compare_runs.json")
    args = ap.parse_args(argv)
    before, after = completed_runs(args.before), completed_runs(args.after)
    rows = []
    for key in sorted(before.keys() & after.keys()):
        for a, b in zip(before[key], after[key], strict=False):
            summary_diff = {
                k: [a.get(k), b.get(k)] for k in sorted((set(a) | set(b)) - IGNORED - {"_dir"}) if a.get(k) != b.get(k)
            }
            verdict = compare_verdicts(Path(a["_dir"]), Path(b["_dir"]))
            rows.append(
                {
                    "dataset": key[0],
                    "redteam": a.get("redteam"),
                    "run_before": a["run_id"],
                    "run_after": b["run_id"],
                    "commit_before": a.get("commit"),
                    "commit_after": b.get("commit"),
                    "summary_differs_in": summary_diff,
                    **verdict,
                }
            )
            rt = a.get("redteam") or {}
            same = not summary_diff and verdict.get("same_samples") and not verdict["columns_that_differ"]
            print(
                f"{key[0]:14} {rt.get('attack', 'none'):15} {rt.get('rate', 0):6.1%}  quarantined "
                f"{verdict.get('quarantined_before')} -> {verdict.get('quarantined_after')} "
                f"(+{verdict.get('added')}, -{verdict.get('dropped')})  {'identical' if same else 'DIFFERENT'}",
                flush=True,
            )
    unpaired = sum(len(v) for k, v in before.items() if k not in after) + sum(
        len(v) for k, v in after.items() if k not in before
    )
    identical = sum(
        not r["summary_differs_in"] and r.get("same_samples") and not r["columns_that_differ"] for r in rows
    )
    print(f"{identical} of {len(rows)} paired runs identical; {unpaired} runs without a partner")
    write_json(
        args.out,
        {
            "commit": commit(),
            "machine": machine(),
            "date": today(),
            "before": str(args.before),
            "after": str(args.after),
            "paired": len(rows),
            "identical": identical,
            "unpaired": unpaired,
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
