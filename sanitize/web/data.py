"""What the review page reads from the store, loaded once and kept: a run's per-sample tables and
features, each version's provenance, and sample pictures.

A completed run's files (``verdict.parquet``, ``features.parquet``, ``detection.json``) and a
version's sample files never change, so they are cached for the life of the server; only the
quarantine's statuses change, and those are always read from the catalog. Pixels are read by row
group on demand and encoded as PNG, with a bounded cache, so a page of thumbnails never decodes a
whole dataset.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from sqlalchemy import select

from sanitize.catalog import Run
from sanitize.errors import NotFoundError
from sanitize.store import PROVENANCE_COLUMNS, Manifest, decode_pixels
from sanitize.workspace import Workspace

SAMPLE_ID = re.compile(r"[0-9a-f]{20}")
"""A sample id as :func:`sanitize.store.sample_id_for` makes it; anything else is refused unread."""

THUMBNAIL_PX = 96


def check_sample_id(sample_id: str) -> str:
    if not SAMPLE_ID.fullmatch(sample_id):
        raise NotFoundError(f"no sample {sample_id[:80]!r}: a sample id is 20 hexadecimal digits")
    return sample_id


class _LRU:
    """A thread-safe LRU map bounded by the total ``size`` of its values."""

    def __init__(self, budget: int, size: Callable[[Any], int]):
        self.budget, self.size = budget, size
        self.used = 0
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.used += self.size(value)
            while self.used > self.budget and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self.used -= self.size(old)


class VersionSamples:
    """Provenance of every sample of one version (no pixels), and where each sample's pixels are."""

    def __init__(self, home: Path, manifest: Manifest):
        self.manifest = manifest
        self.paths = [home / f for f in manifest.files]
        tables, file_index, row_in_file = [], [], []
        for i, path in enumerate(self.paths):
            t = pq.read_table(path, columns=PROVENANCE_COLUMNS)
            tables.append(t)
            file_index.append(np.full(t.num_rows, i, dtype=np.int32))
            row_in_file.append(np.arange(t.num_rows, dtype=np.int64))
        self.table = pa.concat_tables(tables) if tables else pa.table({c: [] for c in PROVENANCE_COLUMNS})
        self.file_index = np.concatenate(file_index) if file_index else np.zeros(0, np.int32)
        self.row_in_file = np.concatenate(row_in_file) if row_in_file else np.zeros(0, np.int64)
        self.row_of = {sid: i for i, sid in enumerate(self.table.column("sample_id").to_pylist())}

    def provenance(self, sample_id: str) -> dict[str, Any] | None:
        i = self.row_of.get(sample_id)
        return None if i is None else self.table.slice(i, 1).to_pylist()[0]

    def location(self, sample_id: str) -> tuple[Path, int] | None:
        i = self.row_of.get(sample_id)
        return None if i is None else (self.paths[int(self.file_index[i])], int(self.row_in_file[i]))


class SampleStore:
    """Sample provenance and pictures by sample id, over the versions that runs cleaned."""

    def __init__(self, ws: Workspace, *, group_cache_bytes: int = 256 << 20, png_cache_bytes: int = 64 << 20):
        self.ws = ws
        self._versions: dict[tuple[str, str], VersionSamples] = {}
        self._lock = threading.Lock()
        self._groups = _LRU(group_cache_bytes, lambda t: t.nbytes)
        self._pngs = _LRU(png_cache_bytes, len)
        self._row_groups: dict[Path, np.ndarray] = {}

    def version(self, dataset: str, version_id: str) -> VersionSamples:
        key = (dataset, version_id)
        with self._lock:
            if key not in self._versions:
                self._versions[key] = VersionSamples(self.ws.store.home, self.ws.store.manifest(dataset, version_id))
            return self._versions[key]

    def find(self, sample_id: str) -> VersionSamples:
        """The version holding ``sample_id``, looked up among every version a run cleaned."""
        check_sample_id(sample_id)
        for v in list(self._versions.values()):
            if sample_id in v.row_of:
                return v
        with self.ws.catalog.session() as s:
            pairs = s.execute(select(Run.dataset, Run.version_id).where(Run.version_id.is_not(None)).distinct()).all()
        for dataset, version_id in pairs:
            if version_id is None or (dataset, version_id) in self._versions:
                continue
            try:
                v = self.version(dataset, version_id)
            except NotFoundError:
                continue  # a run whose version files are gone: nothing of it can be shown
            if sample_id in v.row_of:
                return v
        raise NotFoundError(f"no sample {sample_id} in any version that a run cleaned")

    def pixels(self, sample_id: str) -> np.ndarray:
        """One sample's (H, W, C) uint8 pixels, read with its row group."""
        where = self.find(sample_id).location(sample_id)
        if where is None:
            raise NotFoundError(f"no sample {sample_id}")
        path, row = where
        starts = self._row_groups.get(path)
        if starts is None:
            meta = pq.ParquetFile(path).metadata
            starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
            self._row_groups[path] = starts
        group = int(np.searchsorted(starts, row, side="right") - 1)
        table = self._groups.get((path, group))
        if table is None:
            table = pq.ParquetFile(path).read_row_group(group, columns=["height", "width", "channels", "pixels"])
            self._groups.put((path, group), table)
        return decode_pixels(table.slice(row - int(starts[group]), 1))[0]

    def png(self, sample_id: str, *, thumbnail: bool = False) -> bytes:
        """The sample as PNG at its own size, or no larger than ``THUMBNAIL_PX`` for a thumbnail."""
        key = (sample_id, thumbnail)
        cached = self._pngs.get(key)
        if cached is not None:
            return bytes(cached)
        image = self.pixels(sample_id)
        mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(image.shape[2])
        if mode is None:
            raise NotFoundError(f"sample {sample_id} has {image.shape[2]} channels; only 1, 3 or 4 can be shown")
        picture = Image.fromarray(image[..., 0] if mode == "L" else image, mode=mode)
        if thumbnail and max(picture.size) > THUMBNAIL_PX:
            picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        data = buf.getvalue()
        self._pngs.put(key, data)
        return data


@dataclass(frozen=True)
class DetectorScores:
    """One detector's columns of a run's verdict: scores (higher = more suspicious), flags,
    per-class thresholds (``inf`` where the class was judged clean) and ranks within the class."""

    name: str
    scores: np.ndarray
    flags: np.ndarray
    thresholds: np.ndarray
    ranks: np.ndarray
    notes: dict[int, str]


def _train_features(path: Path) -> tuple[list[str], np.ndarray]:
    """Sample ids and (n, d) float32 features of a run's training samples.

    Reads the file that :func:`sanitize.features.extract_features` writes without importing that
    module, which loads torch: seconds and hundreds of MB the review server has no use for.
    """
    table = pq.read_table(path, columns=["sample_id", "split", "features"], filters=[("split", "=", "train")])
    col = table.column("features").combine_chunks()
    return table.column("sample_id").to_pylist(), col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)


class RunData:
    """A completed run's verdict, detector columns and features, in the verdict's row order."""

    def __init__(self, ws: Workspace, run_id: str):
        with ws.catalog.session() as s:
            run = ws.catalog.run(s, run_id)
            status, config, dataset, version_id = run.status, run.config, run.dataset, run.version_id
        run_dir = ws.store.run_dir(run_id)
        verdict_path = run_dir / "verdict.parquet"
        if not verdict_path.is_file():
            raise NotFoundError(f"run {run_id} has no verdict (status {status}): nothing to show per sample")
        self.run_id, self.dataset, self.version_id = run_id, dataset, version_id
        self.run_dir = run_dir
        manifest = ws.store.manifest(dataset, version_id) if version_id else None
        self.classes: tuple[int, ...] = tuple(manifest.classes) if manifest else ()
        self.class_names: tuple[str, ...] = ws.store.class_names(manifest) if manifest else ()
        self.verdict = pq.read_table(verdict_path)
        self.sample_ids: list[str] = self.verdict.column("sample_id").to_pylist()
        self.row_of = {sid: i for i, sid in enumerate(self.sample_ids)}
        self.labels = self.verdict.column("label").to_numpy()
        self.suspicion = self.verdict.column("suspicion_score").to_numpy()
        self.quarantined = self.verdict.column("quarantine").to_numpy(zero_copy_only=False)
        self.voters: tuple[str, ...] = tuple((config.get("detect") or {}).get("voters") or ())
        detection_path = run_dir / "detection.json"
        detection = json.loads(detection_path.read_text()) if detection_path.is_file() else {"detectors": {}}
        names = [c[: -len("_score")] for c in self.verdict.column_names if c.endswith("_score")]
        self.detectors: dict[str, DetectorScores] = {}
        for name in names:
            if name == "suspicion":
                continue
            notes = (detection["detectors"].get(name) or {}).get("notes") or {}
            self.detectors[name] = DetectorScores(
                name,
                self.verdict.column(f"{name}_score").to_numpy(),
                self.verdict.column(f"{name}_flag").to_numpy(zero_copy_only=False),
                self.verdict.column(f"{name}_threshold").to_numpy(),
                self.verdict.column(f"{name}_rank").to_numpy(),
                {int(k): str(v) for k, v in notes.items()},
            )
        self.class_sizes = {int(c): int(n) for c, n in zip(*np.unique(self.labels, return_counts=True), strict=True)}
        self._lock = threading.Lock()
        self._features: np.ndarray | None = None
        self._kept_index: Any = None
        self._kept_rows: np.ndarray | None = None
        self._projection: np.ndarray | None = None
        self._memo: dict[str, Any] = {}

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """What ``make`` builds from this run's files, built once and kept with the run (an index, the
        pixels' statistics). Two requests at once may both build it; the first one built is kept."""
        found = self._memo.get(key)
        if found is not None:
            return found
        made = make()  # outside any lock: building one thing must not block the run's other readers
        with self._lock:
            return self._memo.setdefault(key, made)

    def row(self, sample_id: str) -> int:
        i = self.row_of.get(check_sample_id(sample_id))
        if i is None:
            raise NotFoundError(f"sample {sample_id} is not a training sample of run {self.run_id}")
        return i

    def features(self) -> np.ndarray:
        """(n, d) float32 features of the training samples, in the verdict's order."""
        with self._lock:
            if self._features is None:
                path = self.run_dir / "features.parquet"
                if not path.is_file():
                    raise NotFoundError(f"run {self.run_id} kept no features at {path}")
                ids, feats = _train_features(path)
                if ids != self.sample_ids:
                    order = {sid: i for i, sid in enumerate(ids)}
                    missing = [s for s in self.sample_ids if s not in order]
                    if missing:
                        raise NotFoundError(f"run {self.run_id}: no features for sample {missing[0]}")
                    feats = feats[[order[s] for s in self.sample_ids]]
                self._features = np.ascontiguousarray(feats, dtype=np.float32)
            return self._features

    def neighbours(self, sample_id: str, k: int = 8) -> list[tuple[str, int, float]]:
        """The ``k`` nearest *kept* training samples (L2 on the run's features, FAISS):
        ``(sample_id, label, distance)``, nearest first, the sample itself left out."""
        feats = self.features()
        with self._lock:
            if self._kept_index is None:
                self._kept_rows = np.flatnonzero(~self.quarantined)
                index = faiss.IndexFlatL2(feats.shape[1])
                index.add(feats[self._kept_rows])
                self._kept_index = index
        assert self._kept_rows is not None
        i = self.row(sample_id)
        if len(self._kept_rows) == 0:
            return []
        dist, idx = self._kept_index.search(feats[i : i + 1], min(k + 1, len(self._kept_rows)))
        out = []
        for d, j in zip(dist[0], idx[0], strict=True):
            if j < 0:
                continue
            row = int(self._kept_rows[j])
            if row != i:
                out.append((self.sample_ids[row], int(self.labels[row]), float(np.sqrt(max(d, 0.0)))))
        return out[:k]

    def projection(self) -> np.ndarray:
        """(n, 2) float32: the features projected on their first two principal components."""
        feats = self.features()
        with self._lock:
            if self._projection is None:
                centred = feats - feats.mean(axis=0)
                # Components from at most 5,000 rows: the plane is the same, and the SVD stays cheap.
                rng = np.random.default_rng(0)
                fit = centred if len(centred) <= 5000 else centred[rng.choice(len(centred), 5000, replace=False)]
                _, _, vt = np.linalg.svd(fit.astype(np.float64), full_matrices=False)
                self._projection = (centred @ vt[:2].T.astype(np.float32)).astype(np.float32)
            return self._projection


class RunCache:
    """The most recently used runs' :class:`RunData` (a completed run's files do not change)."""

    def __init__(self, ws: Workspace, *, keep: int = 8):
        self.ws, self.keep = ws, keep
        self._runs: OrderedDict[str, RunData] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> RunData:
        with self._lock:
            data = self._runs.get(run_id)
            if data is not None:
                self._runs.move_to_end(run_id)
                return data
        data = RunData(self.ws, run_id)  # outside the lock: loading one run must not block the others
        with self._lock:
            data = self._runs.setdefault(run_id, data)
            while len(self._runs) > self.keep:
                self._runs.popitem(last=False)
        return data
