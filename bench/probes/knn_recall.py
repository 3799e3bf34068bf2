"""Probe (issue 15, the 30 s bar): what the approximate k-NN search costs in neighbours and saves in time.

``sanitize.detect.knn.knn_search`` is exact up to ``EXACT_ROWS`` rows and an inverted-file index
above them. On Fashion-MNIST's 60k training images this times both and measures the approximate
search's recall: the share of each row's exact k nearest others that it also returns (mean over
rows, and the 1st percentile row). Two inputs, as the detectors see them: the pixels on 32
principal components (the input-neighbours voter's projection) and on 128 (the width of the
reference model's penultimate features, which the k-NN detector searches); and, when a finished
run is named, that run's own penultimate features.

    python -m bench probe knn-recall                           # pixels, 60k rows, k = 30
    python -m bench probe knn-recall --run data/transfer/fashion-mnist/runs/<run> --rows 20000 60000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import load_fmnist, require_fmnist
from bench.records import RESULTS, stamp, write_json
from sanitize.detect.knn import knn_search


def recall(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per row, the share of the exact neighbours that the approximate search also returned."""
    k = exact.shape[1]
    hits = np.array([np.intersect1d(a, e, assume_unique=True).size for a, e in zip(approx, exact, strict=True)])
    return hits / k


def measure(name: str, x: np.ndarray, k: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    _, exact = knn_search(x, k, use_gpu=False, approximate=False)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, approx = knn_search(x, k, use_gpu=False, approximate=True)
    t_approx = time.perf_counter() - t0
    r = recall(approx, exact)
    row = {
        "input": name,
        "rows": int(len(x)),
        "dims": int(x.shape[1]),
        "k": k,
        "exact_s": round(t_exact, 2),
        "approx_s": round(t_approx, 2),
        "recall_mean": round(float(r.mean()), 4),
        "recall_p01": round(float(np.quantile(r, 0.01)), 4),
    }
    print(row, flush=True)
    return row


def pca(x: np.ndarray, n: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return np.ascontiguousarray(PCA(n, svd_solver="randomized", random_state=0).fit_transform(x), dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench probe knn-recall", description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--rows", type=int, nargs="+", default=[60_000], help="first N training images (each)")
    ap.add_argument("--run", type=Path, help="also a finished run's penultimate features")
    ap.add_argument("--out", type=Path, default=RESULTS / "knn_recall.json")
    args = ap.parse_args(argv)
    require_fmnist()
    images = load_fmnist()["train"][0].reshape(60_000, -1).astype(np.float32) / 255.0
    rows = []
    for n in args.rows:
        for dims in (32, 128):
            rows.append(measure(f"pixels-pca{dims}", pca(images[:n], dims), args.k))
        if args.run is not None:
            from sanitize.features import load_features

            feats = np.asarray(load_features(args.run / "features.parquet")[1], dtype=np.float32)[:n]
            rows.append(measure("run-features", feats, args.k))
    write_json(args.out, {**stamp("bench/probes/knn_recall.py"), "rows": rows})
    print(f"wrote {args.out}")
    return 0
