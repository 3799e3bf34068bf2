"""The sample store: Parquet tables with explicit schemas under the data folder.

Layout under ``Settings.home``::

    datasets/<name>/ingests/<ingest_id>.parquet   samples of one ingest of one source (pixels included)
    datasets/<name>/versions/<version_id>.json    manifest: the ingest files a version is made of
    runs/<run_id>/                                features, scores, verdict, models, summary
    exports/<name>/<version_id>/                  clean versions for training jobs

Every write goes to a temporary path first and is renamed into place, so a failure never leaves a
half-written file where a reader would find it. Readers stream record batches: no stage needs all
the images in memory at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sanitize.errors import InputError, NotFoundError, SanitizeError

ROW_GROUP = 4096

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("content_sha256", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("locator", pa.string(), nullable=False),
        pa.field("ingest_id", pa.string(), nullable=False),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("channels", pa.int32(), nullable=False),
        pa.field("pixels", pa.binary(), nullable=False),
    ],
    metadata={"sanitize.table": "samples", "pixels": "raw uint8 bytes in (height, width, channels) order"},
)
"""One row per sample: its provenance record and its pixels."""

PROVENANCE_COLUMNS = [f.name for f in SAMPLE_SCHEMA if f.name != "pixels"]


def content_hash(image: np.ndarray) -> str:
    """SHA-256 of a sample's canonical content: its shape, then its uint8 pixels in (H, W, C) order.

    Hashing decoded pixels (not file bytes) makes the same image equal across formats.
    """
    h = hashlib.sha256(f"{image.shape[0]}x{image.shape[1]}x{image.shape[2]}:".encode())
    h.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class ChecksumError(SanitizeError):
    """A published file's bytes are not those its version's manifest recorded (or the file is gone)."""


def sample_id_for(source: str, locator: str, sha: str) -> str:
    """A stable id: the same content at the same place in the same source always gets the same id."""
    return hashlib.sha256(f"{source}\x00{locator}\x00{sha}".encode()).hexdigest()[:20]


def version_id_for(pairs: Iterable[tuple[str, int, str]], dataset: str) -> str:
    """A dataset version: a hash over the dataset's name and the sorted (content hash, label, split)
    of all its samples. The name keeps identical content in two datasets two versions."""
    h = hashlib.sha256(f"{dataset}\n".encode())
    for sha, label, split in sorted(pairs):
        h.update(f"{sha}:{label}:{split}\n".encode())
    return "v" + h.hexdigest()[:15]


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux's ``/proc``).

    Elsewhere it is read the only portable way, by setting it and back; for that instant it is 022,
    never 0, so a file another thread creates meanwhile is not left writable by everyone.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder, to be renamed to ``path``: (open descriptor, name).

    ``tempfile.mkstemp`` makes it 0600 whatever the umask, and a rename keeps the mode, so every
    Parquet file and manifest was readable by its writer only: a training job running as another
    user could not read an export. Its mode is set to what ``open`` would give (0666 less the
    umask); a team that wants its data private sets ``umask 077``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def temp_dir_beside(path: Path) -> Path:
    """A new temporary folder beside ``path``, to be renamed to it, with the mode ``mkdir`` would give
    (0777 less the umask; ``tempfile.mkdtemp`` makes it 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~current_umask())
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def atomic_write_table(path: Path, table: pa.Table) -> None:
    fd, tmp = temp_file_beside(path)
    os.close(fd)
    try:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TableWriter:
    """Stream record batches into a Parquet file at a temporary path; ``commit`` renames it into place."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        fd, tmp = temp_file_beside(path)
        os.close(fd)
        self.tmp = Path(tmp)
        self.rows = 0
        self.schema = schema
        self._writer = pq.ParquetWriter(self.tmp, schema)

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.schema != self.schema:
            table = table.cast(self.schema)
        self._writer.write_table(table, row_group_size=ROW_GROUP)
        self.rows += table.num_rows

    def commit(self) -> Path:
        self._writer.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def decode_pixels(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """(B, H, W, C) uint8 from a batch's ``pixels``, ``height``, ``width`` and ``channels`` columns."""
    n = batch.num_rows
    if n == 0:
        return np.zeros((0, 1, 1, 1), dtype=np.uint8)
    h = pc.unique(batch.column("height")).to_pylist()
    w = pc.unique(batch.column("width")).to_pylist()
    c = pc.unique(batch.column("channels")).to_pylist()
    if len(h) != 1 or len(w) != 1 or len(c) != 1:
        raise InputError(f"samples of mixed shapes in one batch: heights {h}, widths {w}, channels {c}")
    col = batch.column("pixels")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    # The binary column's value buffer is the concatenated pixels: no per-row copy needed.
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + n + 1]
    data = np.frombuffer(col.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(n, h[0], w[0], c[0])


@dataclass(frozen=True)
class Manifest:
    """A version's manifest: which ingest files (and, for derived versions, which rows) make it up."""

    version_id: str
    dataset: str
    kind: str
    files: tuple[str, ...]
    n_train: int
    n_test: int
    height: int
    width: int
    channels: int
    classes: tuple[int, ...]
    parent_id: str | None = None
    extra: dict[str, Any] | None = None
    checksums: dict[str, str] | None = None
    """SHA-256 of each file in ``files`` (path -> hex digest) as published; None in manifests written
    before checksums were recorded, which are read but cannot be checked."""
    class_names: tuple[str, ...] | None = None
    """The dataset's label map when the version was published: ``class_names[i]`` names label ``i``.
    None when the labels have no names (IDX, unnamed arrays, manifests written before names were
    recorded, red-team copies, which take their parent's): :meth:`Store.class_names` resolves it."""
    label_map_version: int | None = None
    """Which version of the dataset's label map ``class_names`` is (the catalog's ``label_maps``)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version_id": self.version_id,
            "dataset": self.dataset,
            "kind": self.kind,
            "files": list(self.files),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "classes": list(self.classes),
            "parent_id": self.parent_id,
            "extra": self.extra or {},
        }
        if self.checksums is not None:
            out["checksums"] = dict(sorted(self.checksums.items()))
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
            out["label_map_version"] = self.label_map_version
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Manifest:
        return cls(
            version_id=obj["version_id"],
            dataset=obj["dataset"],
            kind=obj["kind"],
            files=tuple(obj["files"]),
            n_train=obj["n_train"],
            n_test=obj["n_test"],
            height=obj["height"],
            width=obj["width"],
            channels=obj["channels"],
            classes=tuple(obj["classes"]),
            parent_id=obj.get("parent_id"),
            extra=obj.get("extra") or {},
            checksums=obj.get("checksums"),
            class_names=tuple(obj["class_names"]) if obj.get("class_names") is not None else None,
            label_map_version=obj.get("label_map_version"),
        )


class Store:
    """Paths and streaming readers over the data folder."""

    def __init__(self, home: Path):
        self.home = Path(home)

    # --- paths -------------------------------------------------------------------------------
    def dataset_dir(self, dataset: str) -> Path:
        return self.home / "datasets" / dataset

    def ingest_path(self, dataset: str, ingest_id: str) -> Path:
        return self.dataset_dir(dataset) / "ingests" / f"{ingest_id}.parquet"

    def manifest_path(self, dataset: str, version_id: str) -> Path:
        return self.dataset_dir(dataset) / "versions" / f"{version_id}.json"

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def export_dir(self, dataset: str, version_id: str) -> Path:
        return self.home / "exports" / dataset / version_id

    # --- manifests ---------------------------------------------------------------------------
    def write_manifest(self, manifest: Manifest) -> Path:
        path = self.manifest_path(manifest.dataset, manifest.version_id)
        atomic_write_json(path, manifest.to_json())
        return path

    def manifest(self, dataset: str, version_id: str) -> Manifest:
        path = self.manifest_path(dataset, version_id)
        if not path.is_file():
            raise NotFoundError(f"dataset {dataset!r} has no version {version_id!r} (no manifest at {path})")
        return Manifest.from_json(json.loads(path.read_text()))

    def labelled_ancestor(self, manifest: Manifest) -> Manifest | None:
        """``manifest`` or the nearest version it derives from that recorded class names; None if none did."""
        seen: set[str] = set()
        while manifest.class_names is None and manifest.parent_id and manifest.parent_id not in seen:
            seen.add(manifest.version_id)
            try:
                manifest = self.manifest(manifest.dataset, manifest.parent_id)
            except NotFoundError:
                return None
        return manifest if manifest.class_names is not None else None

    def recorded_class_names(self, manifest: Manifest) -> tuple[str, ...] | None:
        """The class names ``manifest`` or the nearest version it derives from recorded; None if none did."""
        found = self.labelled_ancestor(manifest)
        return found.class_names if found is not None else None

    def class_names(self, manifest: Manifest) -> tuple[str, ...]:
        """The name of every label 0..max(classes) of a version: ``names[label]``.

        Recorded names (:meth:`recorded_class_names`) where the version or its parents have them,
        else the integer names ``"0"``, ``"1"``, ... (a label a map does not cover gets its integer).
        """
        names = self.recorded_class_names(manifest) or ()
        size = max([len(names), *(c + 1 for c in manifest.classes)])
        return tuple(names[i] if i < len(names) else str(i) for i in range(size))

    def files(self, manifest: Manifest) -> list[Path]:
        return [self.home / f for f in manifest.files]

    # --- checksums ---------------------------------------------------------------------------
    def with_checksums(self, manifest: Manifest) -> Manifest:
        """``manifest`` with the SHA-256 of each of its files as they are now (for publication)."""
        return replace(manifest, checksums={f: file_sha256(self.home / f) for f in manifest.files})

    def check_files(self, manifest: Manifest) -> None:
        """Refuse a version whose files are not the bytes published: raise :class:`ChecksumError`
        naming the first file and the version. A manifest without checksums (an older release's)
        cannot be checked and passes; ``sanitize verify`` reports it."""
        if manifest.checksums is None:
            return
        for f in manifest.files:
            path = self.home / f
            recorded = manifest.checksums.get(f)
            if recorded is None:
                raise ChecksumError(f"version {manifest.version_id}: file {f} has no checksum in its manifest")
            if not path.is_file():
                raise ChecksumError(f"version {manifest.version_id}: file {f} is missing")
            actual = file_sha256(path)
            if actual != recorded:
                raise ChecksumError(
                    f"version {manifest.version_id}: file {f} does not match its published checksum "
                    f"(SHA-256 {actual[:16]}..., published {recorded[:16]}...): it was changed after publication"
                )

    # --- reading -----------------------------------------------------------------------------
    def iter_samples(
        self,
        manifest: Manifest,
        *,
        split: str | None = None,
        columns: list[str] | None = None,
        batch_size: int = 1024,
        exclude: set[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream a version's samples in batches, in stored order, optionally one split and minus ``exclude``."""
        cols = columns or SAMPLE_SCHEMA.names
        need = list(dict.fromkeys([*cols, "split", "sample_id"]))
        for path in self.files(manifest):
            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=batch_size, columns=need):
                keep = None
                if split is not None:
                    keep = pc.equal(batch.column("split"), split)
                if exclude:
                    out = pc.invert(pc.is_in(batch.column("sample_id"), value_set=pa.array(sorted(exclude))))
                    keep = out if keep is None else pc.and_(keep, out)
                if keep is not None:
                    batch = batch.filter(keep)
                if batch.num_rows:
                    yield batch.select(cols)

    def read_column_table(self, manifest: Manifest, columns: list[str], split: str | None = None) -> pa.Table:
        """Small per-sample columns (ids, labels, provenance) of a whole version; never the pixels."""
        if "pixels" in columns:
            raise ValueError("read_column_table reads metadata only; stream pixels with iter_samples")
        batches = list(self.iter_samples(manifest, split=split, columns=columns, batch_size=65536))
        if not batches:
            return pa.Table.from_batches([], schema=pa.schema([SAMPLE_SCHEMA.field(c) for c in columns]))
        return pa.Table.from_batches(batches)

    def iter_training_batches(
        self,
        manifest: Manifest,
        *,
        split: str,
        batch_size: int,
        seed: int,
        exclude: set[str] | None = None,
        relabel: dict[str, int] | None = None,
        buffer_batches: int = 16,
        with_ids: bool = False,
    ) -> Iterator[tuple[np.ndarray, ...]]:
        """Shuffled ``(images, labels)`` batches for SGD with memory bounded by the shuffle buffer
        (``(images, labels, sample_ids)`` with ``with_ids``, to record what each sample did).

        Row groups are visited in a random order and shuffled within a buffer of
        ``buffer_batches`` row groups, which approximates a full shuffle without loading the split.
        """
        rng = np.random.default_rng(seed)
        groups = [(path, g) for path in self.files(manifest) for g in range(pq.ParquetFile(path).num_row_groups)]
        order = rng.permutation(len(groups))
        cols = ["sample_id", "split", "label", "height", "width", "channels", "pixels"]
        buf_x: list[np.ndarray] = []
        buf_y: list[np.ndarray] = []
        buf_i: list[np.ndarray] = []
        excluded = pa.array(sorted(exclude)) if exclude else None
        open_files: dict[Path, pq.ParquetFile] = {}

        def drain(final: bool) -> Iterator[tuple[np.ndarray, ...]]:
            if not buf_x:
                return
            x = np.concatenate(buf_x)
            y = np.concatenate(buf_y)
            ids = np.concatenate(buf_i) if with_ids else None
            buf_x.clear()
            buf_y.clear()
            buf_i.clear()
            perm = rng.permutation(len(y))
            x, y = x[perm], y[perm]
            if ids is not None:
                ids = ids[perm]
            stop = len(y) if final else len(y) - len(y) % batch_size
            for s in range(0, stop, batch_size):
                if ids is None:
                    yield x[s : s + batch_size], y[s : s + batch_size]
                else:
                    yield x[s : s + batch_size], y[s : s + batch_size], ids[s : s + batch_size]
            if stop < len(y):
                buf_x.append(x[stop:])
                buf_y.append(y[stop:])
                if ids is not None:
                    buf_i.append(ids[stop:])

        for i, k in enumerate(order):
            path, g = groups[k]
            pf = open_files.setdefault(path, pq.ParquetFile(path))
            table = pf.read_row_group(g, columns=cols)
            keep = pc.equal(table.column("split"), split)
            if excluded is not None:
                keep = pc.and_(keep, pc.invert(pc.is_in(table.column("sample_id"), value_set=excluded)))
            table = table.filter(keep)
            if table.num_rows == 0:
                continue
            labels = table.column("label").to_numpy().astype(np.int64)
            if relabel:
                ids = table.column("sample_id").to_pylist()
                labels = np.array([relabel.get(s, int(lab)) for s, lab in zip(ids, labels, strict=True)], np.int64)
            buf_x.append(decode_pixels(table))
            buf_y.append(labels)
            if with_ids:
                buf_i.append(np.asarray(table.column("sample_id").to_pylist(), dtype=object))
            if (i + 1) % buffer_batches == 0:
                yield from drain(final=False)
        yield from drain(final=True)
