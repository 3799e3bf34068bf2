"""Probe (issue 3's ASR bar): retrain finished matrix cells' clean models with a given recipe and measure them.

Detection does not depend on how the clean model trains, so a new retraining recipe needs no new
detection: this retrains each cell's clean model on the same kept samples (the cell's quarantine
left out) and measures clean accuracy and the ASR split of ``python -m bench probe asr-floor`` (over all
non-target test images, over those the model gets right untriggered, and the share it sends to the
target without the trigger). The clean run (``none``) retrained with the same recipe is the
clean-data model of that recipe: each cell's row carries its accuracy and its ASR on the cell's
trigger, the floor no cleaning can go below.

With no options the recipe is the library's default (``RunConfig``: ``retrain_epochs`` None,
``retrain_augment="warp"``), so a row is what a matrix rerun would retrain. ``--keep-all`` trains on
the cell's poisoned set with nothing left out: whether the recipe itself suppresses the backdoor.

    python -m bench probe retrain-recipe --only none wanet:0.01 wanet:0.05 wanet:0.1   # the clean run first
    python -m bench probe retrain-recipe --epochs 4 --augment none --only wanet:0.1     # the old recipe
    python -m bench probe retrain-recipe --markdown
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from bench.data import workspace
from bench.matrix import bars
from bench.probes.asr_floor import asr_figures
from bench.records import DATA, RESULTS, commit, local_cells, parse_only, read_json, stamp, write_json
from sanitize.config import RunConfig
from sanitize.evaluate.measure import predict_split
from sanitize.models import AUGMENTATIONS, random_warps
from sanitize.quarantine import quarantined_ids
from sanitize.runs import RunContext
from sanitize.training import retrain_epochs, train_model
from sanitize.workspace import Workspace


def recipe_key(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def retrain(ws: Workspace, cell: dict[str, Any], recipe: dict[str, Any], out: Path, keep_all: bool) -> dict[str, Any]:
    """Retrain ``cell``'s clean model with ``recipe`` into ``out``; accuracy and ASR on its trigger."""
    ctx = RunContext.load(ws, cell["run_id"])
    exclude = set() if keep_all else quarantined_ids(ws, ctx.run_id, ctx.run_dir / "verdict.parquet")
    manifest = ctx.manifest(ws)
    config = ctx.config.model_copy(update={"retrain_epochs": recipe["epochs"]})
    epochs = retrain_epochs(config, manifest.n_train)
    started = time.perf_counter()
    train_model(ws, ctx, manifest, out=out, exclude=exclude, seed_offset=1, augment=recipe["augment"], epochs=epochs)
    seconds = time.perf_counter() - started
    pred, truth = predict_split(ws, ctx, out)
    row: dict[str, Any] = {
        "attack": cell["attack"],
        "rate": cell["rate"],
        "run_id": cell["run_id"],
        "recipe": {**recipe, "epochs": epochs},
        "keep_all": keep_all,
        "quarantined": len(exclude),
        "clean_acc_after": round(float((pred == truth).mean()), 5),
        "train_seconds": round(seconds, 1),
    }
    if cell["attack"] != "none":
        row.update(asr_figures(ws, ctx, out, cell["attack"], cell["target"]))
        row["asr_before"] = next(r["asr_before"] for r in cell["records"] if r["detector"] == "combined")
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| cell | recipe | quarantined | clean acc. after (clean-data model) | ASR before -> after (clean-data model) "
        "| after, on images right untriggered | after, sent to target untriggered | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["attack"] == "none":
            continue
        rec = r["recipe"]
        warp = f", warps {rec['strength']}/{rec['share']}" if rec["augment"] == "warp" else ""
        floor = r.get("clean_data") or {}
        lines.append(
            f"| {r['attack']} {r['rate']:.1%}{' (nothing left out)' if r['keep_all'] else ''} "
            f"| {rec['epochs']} epochs{warp} | {r['quarantined']:,} "
            f"| {r['clean_acc_after']:.4f} ({floor.get('clean_acc_after', float('nan')):.4f}) "
            f"| {r['asr_before']:.3f} -> {r['asr']:.4f} ({floor.get('asr', float('nan')):.4f}) "
            f"| {r['asr_on_correct']:.4f} | {r['to_target_untriggered']:.4f} | {r['train_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def bars_with_recipe(cells: list[dict[str, Any]], rows: list[dict[str, Any]], key: str) -> str:
    """The matrix's bars table with each cell's ASR and accuracy after taken from its row
    retrained with recipe ``key`` (detection and ART from the matrix), against that recipe's clean run."""
    mine = {(r["attack"], r["rate"]): r for r in rows if r.get("recipe_key") == key and not r["keep_all"]}
    clean = mine.get(("none", 0.0))
    swapped = []
    for cell in cells:
        row = mine.get((cell["attack"], cell["rate"]))
        if cell["attack"] == "none" or row is None:
            continue
        after = {"asr_after": row["asr"], "clean_acc_after": row["clean_acc_after"]}
        records = [{**r, **after} if r["detector"] == "combined" else r for r in cell["records"]]
        floor = (row.get("clean_data") or {}).get("asr")
        swapped.append({**cell, "records": records, "asr_clean_model": floor})
    return bars(swapped, clean["clean_acc_after"] if clean else None)


def main(argv: list[str] | None = None) -> None:
    defaults = RunConfig()
    ap = argparse.ArgumentParser(
        prog="python -m bench probe retrain-recipe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--only", nargs="*", default=None, help="cells as ATTACK:RATE, in this order; none = the clean run")
    ap.add_argument("--epochs", type=int, default=defaults.retrain_epochs, help="default: the library's rule")
    ap.add_argument("--augment", choices=["none", *sorted(AUGMENTATIONS)], default=defaults.retrain_augment)
    ap.add_argument("--strength", type=float, default=0.036, help="random warps' mean displacement (share of side)")
    ap.add_argument("--share", type=float, default=0.5, help="random warps' share of each batch")
    ap.add_argument("--keep-all", action="store_true", help="train on the poisoned set, nothing left out")
    ap.add_argument("--home", type=Path, default=DATA / "bench")
    ap.add_argument("--matrix", type=Path, default=RESULTS / "matrix.json")
    ap.add_argument("--out", type=Path, default=RESULTS / "retrain_recipe.json")
    ap.add_argument("--markdown", action="store_true", help="print the tables of --out for this recipe and stop")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = read_json(args.out)
    recipe = {"epochs": args.epochs, "augment": args.augment, "strength": args.strength, "share": args.share}
    key = recipe_key(recipe)
    matrix = read_json(args.matrix)
    if args.markdown:
        print(markdown([r for r in rows if r.get("recipe_key") == key]))
        print()
        print(bars_with_recipe(matrix, rows, key))
        return
    ws = workspace(args.home)
    if args.augment == "warp":
        # The library's table of augmentations, which its training looks ``augment`` up in.
        AUGMENTATIONS["warp"] = functools.partial(random_warps, strength=args.strength, share=args.share)
    models = args.home.resolve() / "retrain_recipe" / key
    models.mkdir(parents=True, exist_ok=True)
    cells = local_cells(ws, matrix, args.only)
    if args.only is not None:
        order = {spec: i for i, spec in enumerate(parse_only(args.only))}
        cells.sort(key=lambda c: order[(c["attack"], c["rate"])])
    clean_model = models / "none-0.0.pt"
    clean_row = next((r for r in rows if r["attack"] == "none" and r.get("recipe_key") == key), None)
    code = commit()
    for cell in cells:
        model = models / f"{cell['attack']}-{cell['rate']}{'-all' if args.keep_all else ''}.pt"
        row = retrain(ws, cell, recipe, model, args.keep_all)
        row["recipe_key"] = key
        if cell["attack"] == "none":
            clean_row = row
        elif clean_row is not None and clean_model.is_file():
            ctx = RunContext.load(ws, cell["run_id"])
            row["clean_data"] = {
                "clean_acc_after": clean_row["clean_acc_after"],
                **asr_figures(ws, ctx, clean_model, cell["attack"], cell["target"]),
            }
        row.update(stamp(code))
        rows = [
            r
            for r in rows
            if not (
                r["run_id"] == row["run_id"]
                and r.get("recipe_key") == row["recipe_key"]
                and r.get("keep_all") == row["keep_all"]
            )
        ]
        rows.append(row)
        write_json(args.out, rows)
        what = f"ASR {row['asr_before']:.3f} -> {row['asr']:.4f}" if "asr" in row else "the clean-data model"
        floor = row.get("clean_data")
        print(
            f"{cell['attack']:15} {cell['rate']:6.1%}  {row['recipe']['epochs']} epochs, {args.augment}: "
            f"accuracy {row['clean_acc_after']:.4f}, {what}"
            + (f" (clean-data model {floor['asr']:.4f})" if floor else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
