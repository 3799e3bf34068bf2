"""Probe (issue 3's ASR bar): how much of an attack's success rate is the trigger, and how much is the model's
own confusion.

The matrix's ASR is the share of triggered non-target test images that a model sends to the target.
A model that never saw a poison scores above zero too: a shirt already looks like a T-shirt now and
then, and a warped shirt more often. For each finished matrix cell this reads the three models the
cell left behind -- the reference model (trained on the poisoned set), the clean model (retrained
without the quarantine) and the clean-data model (the clean run's reference model, never shown a
poison) -- and measures on the same test images:

- ``asr``: the matrix's figure, over all non-target test images;
- ``asr_on_correct``: over the non-target test images the model classifies correctly *without* the
  trigger, the share the trigger sends to the target. An image the model already calls a T-shirt
  is not counted as the trigger's doing.

    python -m bench probe asr-floor                      # every local cell of bench/results/matrix.json
    python -m bench probe asr-floor --only wanet:0.01 wanet:0.05
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import workspace
from bench.records import DATA, RESULTS, commit, local_cells, read_json, stamp, write_json
from sanitize.evaluate.measure import predict_split
from sanitize.runs import RunContext
from sanitize.workspace import Workspace


def asr_figures(ws: Workspace, ctx: RunContext, model: Path, attack: str, target: int) -> dict[str, float]:
    """ASR of ``model`` over all non-target test images and over those it classifies correctly untriggered,
    and the share of non-target test images it sends to the target without the trigger."""
    plain, truth = predict_split(ws, ctx, model, None, target)
    triggered, truth_again = predict_split(ws, ctx, model, attack, target)
    if not np.array_equal(truth, truth_again):
        raise RuntimeError(f"{ctx.run_dir}: the test split came back in a different order")
    correct = plain == truth
    return {
        "asr": round(float((triggered == target).mean()), 5),
        "asr_on_correct": round(float((triggered[correct] == target).mean()), 5),
        "to_target_untriggered": round(float((plain == target).mean()), 5),
        "test_images": int(len(truth)),
        "correct_untriggered": int(correct.sum()),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench probe asr-floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--only", nargs="*", default=None, help="cells as ATTACK:RATE (default: every local cell)")
    ap.add_argument("--home", type=Path, default=DATA / "bench")
    ap.add_argument("--matrix", type=Path, default=RESULTS / "matrix.json")
    ap.add_argument("--out", type=Path, default=RESULTS / "asr_floor.json")
    args = ap.parse_args(argv)
    ws = workspace(args.home)
    cells = read_json(args.matrix)
    clean = next((c for c in cells if c["attack"] == "none"), None)
    if clean is None or not (ws.store.run_dir(clean["run_id"]) / "model_reference.pt").is_file():
        sys.exit(f"{args.matrix}: no local clean run (attack none) to take the clean-data model from")
    clean_data_model = ws.store.run_dir(clean["run_id"]) / "model_reference.pt"
    code, rows = commit(), []
    for cell in local_cells(ws, [c for c in cells if c["attack"] != "none"], args.only):
        run_dir = ws.store.run_dir(cell["run_id"])
        ctx = RunContext.load(ws, cell["run_id"])
        models = {
            "reference": run_dir / "model_reference.pt",
            "clean": run_dir / "model_clean.pt",
            "clean_data": clean_data_model,
        }
        row: dict[str, Any] = {"attack": cell["attack"], "rate": cell["rate"], "run_id": cell["run_id"]}
        for name, path in models.items():
            row[name] = asr_figures(ws, ctx, path, cell["attack"], cell["target"]) if path.is_file() else None
        row.update(stamp(code))
        rows.append(row)
        parts = [
            f"{name} {row[name]['asr']:.4f} / {row[name]['asr_on_correct']:.4f}"
            for name in models
            if row[name] is not None
        ]
        print(f"{cell['attack']:15} {cell['rate']:6.1%}  ASR all / on correct: " + ", ".join(parts), flush=True)
        write_json(args.out, rows)


if __name__ == "__main__":
    main()
