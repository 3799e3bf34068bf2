"""Benchmark helper: retrain a finished cell's clean model with random small warps and measure it.

The matrix retrains the clean model with the reference model's recipe (``retrain_augment="none"``).
This retrains it again on the same kept samples (the cell's quarantine left out) with
``sanitize.models.random_warps`` at a given ``--strength`` (mean displacement as a share of the image
side) and ``--share`` (of each batch), and measures clean accuracy and the ASR split of
``bench/asr_floor.py``: over all non-target test images, over those the model gets right
untriggered, and the share of non-target test images it sends to the target *without* the trigger
(its own confusion, which no cleaning removes).

    python bench/retrain_warps.py --only wanet:0.1 --strength 0.036 --share 0.5
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.asr_floor import asr_figures  # noqa: E402
from bench.fashion_mnist import commit, machine  # noqa: E402
from bench.matrix import load, local_cells  # noqa: E402
from sanitize import pipeline  # noqa: E402
from sanitize.config import Settings  # noqa: E402
from sanitize.models import random_warps  # noqa: E402
from sanitize.pipeline import RunContext, _predict_split, _quarantined_ids, _train_model  # noqa: E402
from sanitize.store import atomic_write_json  # noqa: E402
from sanitize.workspace import Workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="cells as ATTACK:RATE (default: every local cell)")
    ap.add_argument("--strength", type=float, default=0.036)
    ap.add_argument("--share", type=float, default=0.5)
    ap.add_argument("--home", type=Path, default=ROOT / "data" / "bench")
    ap.add_argument("--matrix", type=Path, default=ROOT / "bench" / "results" / "matrix.json")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrain_warps.json")
    args = ap.parse_args()
    ws = Workspace(Settings(home=args.home.resolve()))
    pipeline.AUGMENTATIONS["warp"] = functools.partial(random_warps, strength=args.strength, share=args.share)
    rows = load(args.out) if args.out.exists() else []
    for cell in local_cells(ws, [c for c in load(args.matrix) if c["attack"] != "none"], args.only):
        ctx = RunContext.load(ws, cell["run_id"])
        exclude = _quarantined_ids(ws, ctx, ctx.run_dir / "verdict.parquet")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            model = _train_model(ws, ctx, ctx.manifest(ws), exclude, None, Path(tmp) / "model.pt", False, 1, "warp")
            pred, truth = _predict_split(ws, ctx, model)
            figures = asr_figures(ws, ctx, model, cell["attack"], cell["target"])
        row = {
            "attack": cell["attack"],
            "rate": cell["rate"],
            "run_id": cell["run_id"],
            "strength": args.strength,
            "share": args.share,
            "quarantined": len(exclude),
            "clean_acc_after": round(float((pred == truth).mean()), 5),
            **figures,
            "seconds": round(time.perf_counter() - started, 1),
            "commit": commit(),
            "machine": machine(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        }
        rows.append(row)
        atomic_write_json(args.out, rows)
        print(
            f"{cell['attack']:8} {cell['rate']:6.1%}  strength {args.strength} share {args.share}: "
            f"accuracy {row['clean_acc_after']:.4f}, ASR {row['asr']:.4f} (on correct {row['asr_on_correct']:.4f}, "
            f"untriggered to target {row['to_target_untriggered']:.4f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
