"""Probe (issue 3's ASR bar): WaNet's floor on clean-data models, for its own warping field and for fields it
never used.

A model trained on clean data sends some warped non-target test images to the target class (a
warped shirt read as a T-shirt): the floor under the matrix's WaNet ASR. A clean-model recipe was
chosen by measuring that floor with WaNet's one field (seed 4242) on Fashion-MNIST's test images.
This measures it again with other random fields of the same size (same ``k`` and strength, other
seeds), which no choice was made on, so a recipe that only suits the one field shows up.

For each model and field: the share of non-target test images sent to the target (the floor), the
share sent there untriggered, and the accuracy on the warped images.

    python -m bench probe warp-floor                                  # the clean run's models, 10 fields
    python -m bench probe warp-floor --model data/bench/retrain_recipe/KEY/none-0.0.pt --seeds 4242 1 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data import workspace
from bench.records import DATA, RESULTS, commit, read_json, stamp, write_json
from sanitize.evaluate.redteam import stamp_warp
from sanitize.models import FEATURE_LAYER, load_torchscript, to_tensor
from sanitize.runs import RunContext
from sanitize.store import decode_pixels
from sanitize.workspace import Workspace

WANET_SEED = 4242


def test_images(ws: Workspace, ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for batch in ws.store.iter_samples(
        ctx.manifest(ws), split="test", columns=["label", "height", "width", "channels", "pixels"]
    ):
        xs.append(decode_pixels(batch))
        ys.append(batch.column("label").to_numpy())
    return np.concatenate(xs), np.concatenate(ys)


def predict(model: torch.nn.Module, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    with torch.no_grad():
        parts = [model(to_tensor(images[i : i + batch])).argmax(1).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench probe warp-floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", type=Path, nargs="*", default=None, help="default: the clean run's models")
    ap.add_argument("--seeds", type=int, nargs="*", default=[WANET_SEED, *range(1, 11)])
    ap.add_argument("--target", type=int, default=0)
    ap.add_argument("--home", type=Path, default=DATA / "bench")
    ap.add_argument("--matrix", type=Path, default=RESULTS / "matrix.json")
    ap.add_argument("--out", type=Path, default=RESULTS / "warp_floor.json")
    args = ap.parse_args(argv)
    ws = workspace(args.home)
    clean = next((c for c in read_json(args.matrix) if c["attack"] == "none"), None)
    if clean is None:
        sys.exit(f"{args.matrix}: no clean run (attack none) to take the test images and models from")
    ctx = RunContext.load(ws, clean["run_id"])
    models = args.model
    if models is None:
        models = [ctx.run_dir / "model_reference.pt", ctx.run_dir / "model_clean.pt"]
        models += sorted((args.home.resolve() / "retrain_recipe").glob("*/none-0.0.pt"))
    images, labels = test_images(ws, ctx)
    keep = labels != args.target
    images, labels = images[keep], labels[keep]
    warped = {seed: stamp_warp(images, seed=seed) for seed in args.seeds}
    rows: list[dict[str, Any]] = read_json(args.out)
    code = commit()
    for path in models:
        model = load_torchscript(path, FEATURE_LAYER).eval()
        plain = predict(model, images)
        row: dict[str, Any] = {
            "model": str(path.resolve().relative_to(args.home.resolve())),
            "target": args.target,
            "test_images": int(len(labels)),
            "to_target_untriggered": round(float((plain == args.target).mean()), 5),
            "fields": {},
        }
        for seed, x in warped.items():
            pred = predict(model, x)
            row["fields"][str(seed)] = {
                "to_target": round(float((pred == args.target).mean()), 5),
                "accuracy": round(float((pred == labels).mean()), 5),
            }
        others = [v["to_target"] for s, v in row["fields"].items() if int(s) != WANET_SEED]
        if others:
            row["other_fields_mean"] = round(float(np.mean(others)), 5)
            row["other_fields_max"] = round(float(np.max(others)), 5)
        row.update(stamp(code))
        rows = [r for r in rows if r["model"] != row["model"]] + [row]
        write_json(args.out, rows)
        wanet = row["fields"].get(str(WANET_SEED), {}).get("to_target")
        print(
            f"{row['model']}: untriggered {row['to_target_untriggered']:.4f}, WaNet's field "
            f"{wanet if wanet is None else f'{wanet:.4f}'}, other fields mean {row.get('other_fields_mean')} "
            f"max {row.get('other_fields_max')}",
            flush=True,
        )


if __name__ == "__main__":
    main()
