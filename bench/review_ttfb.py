"""Benchmark: time to first byte of the review page with a 10,000-entry quarantine.

Builds a run the size of Fashion-MNIST's training set (60,000 28x28 images from three sources)
whose verdict quarantines 10,000 of them. The images, features and detector scores are synthetic,
but every file and catalog row is written by the library's own stages: ingest, ``start_run``,
``combine`` and ``write_verdict`` for the verdict, ``quarantine_stage`` for the 10,000 entries,
``export_stage`` and ``finish_run``. Then it starts ``sanitize review`` in its own process, logs in
as a reviewer and measures, over loopback with a new connection per request, the time from sending
a request to its first byte (median of 20):

- the quarantine page (first page, grouped by class, 200 thumbnails per page),
- its last page (offset 9,800), and a filtered page (source, status and detector),
- a sample page (20 different quarantined samples),
- a thumbnail (20 different samples, not yet cached as PNG).

The first request of each kind after the server starts (loading the run's tables, building the
FAISS index of the kept samples) is reported separately as ``cold``.

    python -m bench review                  # writes bench/results/review_ttfb.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pyarrow as pa
from sqlalchemy import func, select

from bench.records import RESULTS, ROOT, commit, stamp, write_json
from sanitize.catalog import QuarantineEntry
from sanitize.config import DetectConfig, RunConfig, Settings
from sanitize.detect import combine
from sanitize.detect.base import DetectorResult
from sanitize.detect.verdict import write_verdict
from sanitize.features import feature_schema
from sanitize.ingest.core import arrays_to_batches, ingest_batches
from sanitize.pipeline import export_stage, finish_run, quarantine_stage, start_run
from sanitize.store import atomic_write_table
from sanitize.web.auth import add_reviewer
from sanitize.workspace import Workspace

N_CLASSES = 10
SOURCES = {"vendor-a": 30_000, "vendor-b": 20_000, "vendor-c": 10_000}
N_QUARANTINED = 10_000
DIM = 64
REPEATS = 20


def build_run(ws: Workspace, seed: int) -> tuple[str, list[str]]:
    """A completed run over 60,000 synthetic samples with exactly ``N_QUARANTINED`` quarantined."""
    rng = np.random.default_rng(seed)
    for source, n in SOURCES.items():
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, N_CLASSES, size=n)
        ingest_batches(
            ws.catalog,
            ws.store,
            dataset="ttfb",
            batches=arrays_to_batches(x, y, "train", prefix=source),
            source=source,
            uri=f"synthetic://{source}",
            fmt="builtin",
            actor="bench",
        )
    config = RunConfig(
        dataset="ttfb",
        retrain=False,
        detect=DetectConfig(detectors=("knn", "whitened_clustering"), voters=("whitened_clustering",)),
    )
    ctx = start_run(ws, config)
    prov = ws.store.read_column_table(ctx.manifest(ws), ["sample_id", "label", "source"], split="train")
    ids = prov.column("sample_id").to_pylist()
    labels = prov.column("label").to_numpy()
    sources = np.array(prov.column("source").to_pylist())
    n = len(ids)

    # The quarantine: 10,000 samples, a third of them from vendor-c (a tenth of the data), so the
    # per-source analysis has something to name.
    weights = np.where(sources == "vendor-c", 5.0, 1.0)
    chosen = rng.choice(n, N_QUARANTINED, replace=False, p=weights / weights.sum())
    flagged = np.zeros(n, dtype=bool)
    flagged[chosen] = True

    centres = rng.normal(0, 4, size=(N_CLASSES, DIM))
    feats = (centres[labels] + rng.normal(0, 1, size=(n, DIM)) + flagged[:, None] * 3.0).astype(np.float32)
    atomic_write_table(
        ctx.run_dir / "features.parquet",
        pa.table(
            {
                "sample_id": ids,
                "split": ["train"] * n,
                "label": pa.array(labels, pa.int64()),
                "prediction": pa.array(labels, pa.int64()),
                "features": pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel(), pa.float32()), DIM),
            },
            schema=feature_schema(DIM),
        ),
    )

    voter_scores = np.where(flagged, rng.normal(9, 2, n), rng.normal(0, 1, n))
    voter_thr = {int(c): float(voter_scores[flagged & (labels == c)].min()) for c in range(N_CLASSES)}
    voter_scores = np.where(~flagged, np.minimum(voter_scores, min(voter_thr.values()) - 1e-6), voter_scores)
    knn_scores = rng.uniform(0, 1, n)
    results = {
        "whitened_clustering": DetectorResult(
            "whitened_clustering",
            voter_scores,
            flagged.copy(),
            voter_thr,
            {c: float(flagged[labels == c].mean()) for c in range(N_CLASSES)},
            {"synthetic": True},
            {c: "synthetic scores for the review-page benchmark" for c in range(N_CLASSES)},
        ),
        "knn": DetectorResult(
            "knn",
            knn_scores,
            knn_scores >= 0.55,
            dict.fromkeys(range(N_CLASSES), 0.55),
            {c: float((knn_scores[labels == c] >= 0.55).mean()) for c in range(N_CLASSES)},
            {"synthetic": True},
            {},
        ),
    }
    verdict = combine(results, config.detect.voters, labels, config.detect.fallback_voters)
    verdict_path = write_verdict(ctx.run_dir, ids, labels, verdict, dict.fromkeys(results, 0.0))
    counts = quarantine_stage(ws, ctx, verdict_path)
    if counts.quarantined != N_QUARANTINED:
        raise SystemExit(f"expected {N_QUARANTINED} quarantine entries, the run has {counts.quarantined}")
    clean = export_stage(ws, ctx, verdict_path)
    finish_run(ws, ctx, counts, {}, clean, None)
    return ctx.run_id, [ids[i] for i in np.sort(chosen)]


def request(port: int, path: str, cookie: str | None = None) -> tuple[float, float, int, bytes]:
    """(seconds to the first byte, seconds to the last, HTTP status, body) of one GET on a new connection."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/html\r\nConnection: close\r\n"
        if cookie:
            head += f"Cookie: {cookie}\r\n"
        start = time.perf_counter()
        s.sendall((head + "\r\n").encode())
        chunks = [s.recv(1)]
        first = time.perf_counter()
        while chunk := s.recv(1 << 16):
            chunks.append(chunk)
        last = time.perf_counter()
    raw = b"".join(chunks)
    header, _, body = raw.partition(b"\r\n\r\n")
    return first - start, last - start, int(header.split(b" ", 2)[1]), body


def log_in(port: int, token: str) -> str:
    body = urlencode({"token": token, "next": "/"}).encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            (
                f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        raw = b""
        while chunk := s.recv(1 << 16):
            raw += chunk
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"set-cookie:"):
            return line.split(b":", 1)[1].split(b";")[0].strip().decode()
    raise SystemExit(f"login failed: {raw[:300]!r}")


def measure(port: int, paths: list[str], cookie: str, expect: bytes) -> dict[str, Any]:
    ttfb, total, sizes = [], [], []
    for path in paths:
        first, last, status, body = request(port, path, cookie)
        if status != 200 or expect not in body:
            raise SystemExit(f"GET {path}: status {status}, expected content missing: {body[:300]!r}")
        ttfb.append(first)
        total.append(last)
        sizes.append(len(body))
    return {
        "requests": len(paths),
        "ttfb_median_ms": round(statistics.median(ttfb) * 1000, 1),
        "ttfb_p90_ms": round(float(np.percentile(ttfb, 90)) * 1000, 1),
        "ttfb_min_ms": round(min(ttfb) * 1000, 1),
        "ttfb_max_ms": round(max(ttfb) * 1000, 1),
        "total_median_ms": round(statistics.median(total) * 1000, 1),
        "bytes_median": int(statistics.median(sizes)),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench review", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--home", type=Path, default=None, help="Data folder (default: a temporary one, removed after).")
    ap.add_argument("--out", type=Path, default=RESULTS / "review_ttfb.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    code = commit()  # before the run is built: the code that ran, not what the tree holds later
    home = args.home or Path(tempfile.mkdtemp(prefix="review-ttfb-"))
    ws = Workspace(Settings(home=home, catalog_url=None))
    t0 = time.perf_counter()
    run_id, quarantined_ids = build_run(ws, args.seed)
    build_s = time.perf_counter() - t0
    token = add_reviewer(ws.catalog, "bench")
    with ws.catalog.session() as s:
        n_entries = s.scalar(select(func.count()).where(QuarantineEntry.run_id == run_id)) or 0
    print(f"built run {run_id}: 60,000 samples, {n_entries} quarantined, in {build_s:.0f} s ({home})", flush=True)

    port = free_port()
    env = {**os.environ, "SANITIZE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("SANITIZE_CATALOG_URL", None)
    cmd = [sys.executable, "-m", "sanitize.cli", "review", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"the review server did not start: {server.stdout.read() if server.stdout else ''}"
                    ) from None
                time.sleep(0.2)
        cookie = log_in(port, token)
        q = f"/runs/{run_id}/quarantine"
        rng = np.random.default_rng(args.seed)
        samples = [str(s) for s in rng.choice(quarantined_ids, 2 * REPEATS + 2, replace=False)]
        cold = {}
        for name, path in (("quarantine", q), ("sample", f"/runs/{run_id}/samples/{samples[-1]}")):
            first, last, status, _ = request(port, path, cookie)
            cold[name] = {"ttfb_ms": round(first * 1000, 1), "total_ms": round(last * 1000, 1), "status": status}
        filtered = q + "?" + urlencode({"source": "vendor-c", "status": "pending", "detector": "knn"})
        figures = {
            "quarantine_page": measure(port, [q] * REPEATS, cookie, b'class="tile status-pending"'),
            "quarantine_last_page": measure(port, [q + "?page=50"] * REPEATS, cookie, b'id="page-no">50<'),
            "quarantine_filtered": measure(port, [filtered] * REPEATS, cookie, b'class="tile status-pending"'),
            "sample_page": measure(
                port, [f"/runs/{run_id}/samples/{s}" for s in samples[:REPEATS]], cookie, b'id="neighbours"'
            ),
            "thumbnail": measure(port, [f"/img/{s}?thumb=1" for s in samples[REPEATS : 2 * REPEATS]], cookie, b"PNG"),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    record = {
        "benchmark": "review_ttfb",
        "command": "python -m bench review",
        **stamp(code),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "run_id": run_id,
        "n_train": sum(SOURCES.values()),
        "n_quarantined": n_entries,
        "per_page": 200,
        "build_seconds": round(build_s, 1),
        "cold": cold,
        **figures,
    }
    write_json(args.out, record)
    for name, f in figures.items():
        print(
            f"{name:22s} TTFB median {f['ttfb_median_ms']:7.1f} ms (p90 {f['ttfb_p90_ms']:.1f}, "
            f"min {f['ttfb_min_ms']:.1f}, max {f['ttfb_max_ms']:.1f}), {f['bytes_median']:,} bytes"
        )
    print(f"cold: {cold}")
    print(f"record: {args.out}")
    if args.home is None:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
