"""Benchmark: naming the poisoned supplier. Fashion-MNIST's 60,000 training images are dealt to
10 sources of 6,000; bad sources stamp BadNets (3x3 corner patch, relabelled to class 0) on a share
of their own images. Each source is ingested as its own ``.npz`` with its name, the test split as a
separate ``holdout`` source, and an ordinary cleaning run (no red team, no rate given) cleans it.
The run's per-source analysis names suspicious sources; this script scores that against the truth.

    python bench/sources.py                       # one bad source at 20 %, two at 10 %, and none
    python bench/sources.py --settings one-20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fashion_mnist import FMNIST, commit, machine  # noqa: E402
from sanitize.config import RunConfig, Settings  # noqa: E402
from sanitize.evaluate.metrics import detection_figures  # noqa: E402
from sanitize.evaluate.redteam import stamp_patch  # noqa: E402
from sanitize.ingest.core import ingest_path  # noqa: E402
from sanitize.ingest.readers import read_source  # noqa: E402
from sanitize.pipeline import run_cleaning  # noqa: E402
from sanitize.store import atomic_write_json  # noqa: E402
from sanitize.workspace import Workspace  # noqa: E402

N_SOURCES = 10
TARGET = 0
SETTINGS = {"one-20": {"vendor-3": 0.20}, "two-10": {"vendor-3": 0.10, "vendor-7": 0.10}, "clean": {}}


def load_fmnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {"train": ([], []), "test": ([], [])}
    for batch in read_source(FMNIST, format="idx"):
        for img, lab, split in zip(batch.images, batch.labels, batch.splits, strict=True):
            out[split][0].append(img)
            out[split][1].append(lab)
    return {k: (np.stack(x), np.array(y, dtype=np.int64)) for k, (x, y) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--home", type=Path, default=ROOT / "data" / "bench-sources")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sources.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = load_fmnist()
    x, y = data["train"]
    rng = np.random.default_rng(args.seed)
    shares = np.array_split(rng.permutation(len(y)), N_SOURCES)
    code = commit()
    for setting in args.settings:
        bad = SETTINGS[setting]
        ws = Workspace(Settings(home=(args.home / setting).resolve()))
        dataset = f"fmnist-sources-{setting}"
        truth: dict[tuple[str, str], bool] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for k, idx in enumerate(shares):
                name = f"vendor-{k}"
                xs, ys = x[idx].copy(), y[idx].copy()
                mask = np.zeros(len(ys), dtype=bool)
                if name in bad:
                    candidates = np.flatnonzero(ys != TARGET)
                    n = int(round(bad[name] * len(ys)))
                    chosen = rng.choice(candidates, size=n, replace=False)
                    xs[chosen] = stamp_patch(xs[chosen])
                    ys[chosen] = TARGET
                    mask[chosen] = True
                path = Path(tmp) / f"{name}.npz"
                np.savez(path, x=xs, y=ys)
                ingest_path(ws.catalog, ws.store, dataset=dataset, path=path, source=name, actor="bench")
                truth.update({(name, f"train:{i}"): bool(m) for i, m in enumerate(mask)})
            test = Path(tmp) / "holdout.npz"
            np.savez(test, x=data["test"][0], y=data["test"][1])
            ingest_path(ws.catalog, ws.store, dataset=dataset, path=test, source="holdout", split="test", actor="bench")
        start = time.perf_counter()
        result = run_cleaning(RunConfig(dataset=dataset, seed=args.seed), ws, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        s = result.summary
        named = set(s["suspicious_sources"])
        truly_bad = set(bad)
        tp = len(named & truly_bad)
        verdict = pq.read_table(
            result.run_dir / "verdict.parquet", columns=["sample_id", "quarantine", "suspicion_score"]
        )
        prov = ws.store.read_column_table(
            ws.store.manifest(dataset, result.version), ["sample_id", "source", "locator"], split="train"
        )
        is_poison = np.array(
            [
                truth[(src, loc)]
                for src, loc in zip(prov.column("source").to_pylist(), prov.column("locator").to_pylist(), strict=True)
            ]
        )
        fig = detection_figures(
            is_poison, verdict.column("quarantine").to_numpy(), verdict.column("suspicion_score").to_numpy()
        )
        record: dict[str, Any] = {
            "dataset": "fashion-mnist",
            "setting": setting,
            "attack": "badnets" if bad else "none",
            "rate": round(float(is_poison.mean()), 4),
            "target": TARGET if bad else None,
            "detector": "combined",
            "n_train": len(is_poison),
            "n_sources": N_SOURCES,
            "bad_sources": sorted(truly_bad),
            "named_sources": sorted(named),
            "source_precision": tp / len(named) if named else (1.0 if not bad else 0.0),
            "source_recall": tp / len(truly_bad) if truly_bad else None,
            **fig.as_dict(),
            "clean_acc_before": s["clean_acc_before"],
            "clean_acc_after": s["clean_acc_after"],
            "asr_before": None,
            "asr_after": None,
            "per_source": s["per_source"],
            "seconds": round(seconds, 1),
            "run_id": result.run_id,
            "commit": code,
            "machine": machine(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        }
        old = __import__("json").loads(args.out.read_text()) if args.out.exists() else []
        old = [r for r in old if r.get("setting") != setting]
        atomic_write_json(args.out, old + [record])
        print(
            f"{setting}: named {sorted(named)} (bad {sorted(truly_bad)}), quarantined {fig.quarantined} of "
            f"{fig.n_poison} poisons, recall {fig.recall}, fpr {fig.fpr:.4f}, {seconds:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
