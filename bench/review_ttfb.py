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

``--scenario all-samples`` measures the all-samples page instead, on a run of 1,000,000 training
samples (8x8 grey images, the smallest the store takes, from three sources; 16-d features; 10,000
quarantined), built by the same stages: page 1 and page 500 of every sample sorted by a detector's
score (200 per page), the find-more-like-this grid (20 different samples, feature and input space),
and the trigger picture (one class's quarantine, and 20 different groups not yet pictured).

    python -m bench review                            # writes bench/results/review_ttfb.json
    python -m bench review --scenario all-samples     # writes bench/results/review_ttfb_all_samples.json
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
from collections.abc import Iterator
from contextlib import contextmanager
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


LARGE_SOURCES = {"vendor-a": 500_000, "vendor-b": 300_000, "vendor-c": 200_000}


def build_run(
    ws: Workspace,
    seed: int,
    sources: dict[str, int] = SOURCES,
    n_quarantined: int = N_QUARANTINED,
    side: int = 28,
    dim: int = DIM,
) -> tuple[str, list[str]]:
    """A completed run over synthetic samples (``sources``: samples per source, ``side`` x ``side``
    grey images, ``dim``-d features) with exactly ``n_quarantined`` quarantined."""
    rng = np.random.default_rng(seed)
    for source, n in sources.items():
        x = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
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
    chosen = rng.choice(n, n_quarantined, replace=False, p=weights / weights.sum())
    flagged = np.zeros(n, dtype=bool)
    flagged[chosen] = True

    centres = rng.normal(0, 4, size=(N_CLASSES, dim))
    feats = (centres[labels] + rng.normal(0, 1, size=(n, dim)) + flagged[:, None] * 3.0).astype(np.float32)
    atomic_write_table(
        ctx.run_dir / "features.parquet",
        pa.table(
            {
                "sample_id": ids,
                "split": ["train"] * n,
                "label": pa.array(labels, pa.int64()),
                "prediction": pa.array(labels, pa.int64()),
                "features": pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel(), pa.float32()), dim),
            },
            schema=feature_schema(dim),
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
    if counts.quarantined != n_quarantined:
        raise SystemExit(f"expected {n_quarantined} quarantine entries, the run has {counts.quarantined}")
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


@contextmanager
def serve(home: Path) -> Iterator[int]:
    """``sanitize review`` over ``home`` in its own process, on a free port, until the block ends."""
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
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def cold(port: int, path: str, cookie: str) -> dict[str, Any]:
    first, last, status, _ = request(port, path, cookie)
    if status != 200:
        raise SystemExit(f"GET {path}: status {status}")
    return {"ttfb_ms": round(first * 1000, 1), "total_ms": round(last * 1000, 1), "status": status}


def all_samples(args: argparse.Namespace, code: str) -> None:
    """The all-samples page, more like this and the trigger picture at 1,000,000 samples."""
    home = args.home or Path(tempfile.mkdtemp(prefix="review-ttfb-1m-"))
    ws = Workspace(Settings(home=home, catalog_url=None))
    t0 = time.perf_counter()
    sources = {k: n * args.samples // sum(LARGE_SOURCES.values()) for k, n in LARGE_SOURCES.items()}
    n_quarantined = max(10, args.samples // 100)
    run_id, quarantined_ids = build_run(ws, args.seed, sources, n_quarantined, side=8, dim=16)
    build_s = time.perf_counter() - t0
    n_train = sum(sources.values())
    token = add_reviewer(ws.catalog, "bench")
    print(f"built run {run_id}: {n_train:,} samples, {n_quarantined:,} quarantined, in {build_s:.0f} s", flush=True)
    rng = np.random.default_rng(args.seed)
    prov = ws.store.read_column_table(
        ws.store.manifest("ttfb", _version_of(ws, run_id)),
        ["sample_id"],
        split="train",
    )
    every = prov.column("sample_id").to_pylist()
    picks = [str(s) for s in rng.choice(every, 2 * REPEATS, replace=False)]
    sort = urlencode({"detector": "whitened_clustering", "sort": "score_desc"})
    page_1 = f"/runs/{run_id}/samples?{sort}"
    deep = min(500, n_train // 200)
    page_500 = f"/runs/{run_id}/samples?{sort}&page={deep}"
    similar = [f"/runs/{run_id}/similar?" + urlencode({"sample_id": s, "space": "features"}) for s in picks[:REPEATS]]
    similar_px = [f"/runs/{run_id}/similar?" + urlencode({"sample_id": s, "space": "pixels"}) for s in picks[REPEATS:]]
    trigger = f"/runs/{run_id}/trigger.png?label=3&verdict=quarantine&kind=difference"
    # Twenty groups never pictured before: a class's most suspicious samples under the k-NN detector.
    groups = [
        f"/runs/{run_id}/trigger.png?" + urlencode({"label": r % N_CLASSES, "detector": "knn", "max_rank": 50 + r})
        for r in range(REPEATS)
    ]
    with serve(home) as port:
        cookie = log_in(port, token)
        first = {
            "all_samples_page_1": cold(port, page_1, cookie),
            "similar_features": cold(port, similar[0], cookie),
            "similar_pixels": cold(port, similar_px[0], cookie),
            "trigger_picture": cold(port, trigger, cookie),
        }
        figures = {
            "all_samples_page_1": measure(port, [page_1] * REPEATS, cookie, b'id="page-no">1<'),
            f"all_samples_page_{deep}": measure(port, [page_500] * REPEATS, cookie, f'id="page-no">{deep}<'.encode()),
            "similar_features": measure(port, similar, cookie, b'id="grid"'),
            "similar_pixels": measure(port, similar_px, cookie, b'id="grid"'),
            "trigger_picture": measure(port, [trigger] * REPEATS, cookie, b"PNG"),
            "trigger_picture_new_group": measure(port, groups, cookie, b"PNG"),
        }
    record = {
        "benchmark": "review_ttfb_all_samples",
        "command": "python -m bench review --scenario all-samples",
        **stamp(code),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "run_id": run_id,
        "n_train": n_train,
        "n_quarantined": len(quarantined_ids),
        "image": "8x8x1",
        "feature_dim": 16,
        "per_page": 200,
        "build_seconds": round(build_s, 1),
        "cold": first,
        **figures,
    }
    out = args.out or RESULTS / "review_ttfb_all_samples.json"
    write_json(out, record)
    report(figures, first, out)
    if args.home is None:
        shutil.rmtree(home, ignore_errors=True)


def _version_of(ws: Workspace, run_id: str) -> str:
    with ws.catalog.session() as s:
        version = ws.catalog.run(s, run_id).version_id
    if version is None:
        raise SystemExit(f"run {run_id} has no version")
    return version


def report(figures: dict[str, dict[str, Any]], first: dict[str, Any], out: Path) -> None:
    for name, f in figures.items():
        print(
            f"{name:26s} TTFB median {f['ttfb_median_ms']:7.1f} ms (p90 {f['ttfb_p90_ms']:.1f}, "
            f"min {f['ttfb_min_ms']:.1f}, max {f['ttfb_max_ms']:.1f}), {f['bytes_median']:,} bytes"
        )
    print(f"cold: {first}")
    print(f"record: {out}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench review", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--home", type=Path, default=None, help="Data folder (default: a temporary one, removed after).")
    ap.add_argument(
        "--out", type=Path, default=None, help="Record (default: bench/results/review_ttfb[_all_samples].json)."
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", choices=("quarantine", "all-samples"), default="quarantine")
    ap.add_argument("--samples", type=int, default=1_000_000, help="Training samples of the all-samples run.")
    args = ap.parse_args(argv)
    code = commit()  # before the run is built: the code that ran, not what the tree holds later
    if args.scenario == "all-samples":
        all_samples(args, code)
        return
    args.out = args.out or RESULTS / "review_ttfb.json"
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
