"""The data files' checks: bytes against the published checksums, pixels against each sample's hash,
rows against the counts, and each version's id against its content (see :mod:`sanitize.verify`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sanitize.catalog import Version
from sanitize.errors import NotFoundError
from sanitize.export import clean_version_id
from sanitize.store import Manifest, file_sha256, version_id_for
from sanitize.verify.report import VerifyReport
from sanitize.workspace import Workspace


@dataclass
class FileScan:
    """One data file as read: its bytes' hash, the samples whose pixels do not match, rows per split."""

    sha256: str | None
    error: str | None = None
    bad_samples: list[str] = field(default_factory=list)
    rows: int = 0
    splits: dict[str, int] = field(default_factory=dict)


@dataclass
class Columns:
    """A version's per-sample metadata, by split (no pixels)."""

    ids: dict[str, list[str]]
    labels: dict[str, list[int]]
    shas: dict[str, list[str]]


class StoreChecker:
    """Checks versions and runs, reading each file and each version's columns once."""

    def __init__(self, ws: Workspace, report: VerifyReport):
        self.ws = ws
        self.report = report
        self.scans: dict[str, FileScan] = {}
        self.columns: dict[str, Columns | None] = {}
        self.manifests: dict[str, Manifest | None] = {}

    def manifest(self, v: Version) -> Manifest | None:
        if v.id not in self.manifests:
            path = self.ws.store.home / v.manifest
            self.manifests[v.id] = self.ws.store.manifest(v.dataset, v.id) if path.is_file() else None
        return self.manifests[v.id]

    def version_columns(self, dataset: str, version_id: str) -> Columns | None:
        """A version's ids, labels and content hashes by split; None when it cannot be read."""
        if version_id not in self.columns:
            try:
                manifest = self.ws.store.manifest(dataset, version_id)
                table = self.ws.store.read_column_table(manifest, ["sample_id", "split", "label", "content_sha256"])
            except (NotFoundError, OSError, pa.ArrowException):
                self.columns[version_id] = None
                return None
            cols = Columns({}, {}, {})
            split = np.array(table.column("split").to_pylist(), dtype=object)
            ids = np.array(table.column("sample_id").to_pylist(), dtype=object)
            labels = table.column("label").to_numpy()
            shas = np.array(table.column("content_sha256").to_pylist(), dtype=object)
            for name in ("train", "test"):
                mask = split == name
                cols.ids[name] = ids[mask].tolist()
                cols.labels[name] = labels[mask].tolist()
                cols.shas[name] = shas[mask].tolist()
            self.columns[version_id] = cols
        return self.columns[version_id]

    # --- versions ------------------------------------------------------------------------------
    def check_version(self, v: Version) -> None:
        rep = self.report
        rep.versions += 1
        manifest = self.manifest(v)
        if manifest is None:
            rep.problem("files", f"manifest {v.manifest} is missing", version=v.id, file=v.manifest)
            return
        if v.kind == "clean":
            self.check_export_manifest(v, manifest)
        if (manifest.version_id, manifest.dataset, manifest.kind) != (v.id, v.dataset, v.kind):
            rep.problem(
                "files",
                f"the manifest describes {manifest.kind} version {manifest.version_id} of {manifest.dataset!r}, "
                f"the catalog {v.kind} version {v.id} of {v.dataset!r}",
                version=v.id,
                file=v.manifest,
            )
        if manifest.checksums is None:
            rep.warn(
                "files", "no checksums recorded (published by an older release): file bytes not compared", version=v.id
            )
        counts = {"train": 0, "test": 0}
        readable = True
        for f in manifest.files:
            scan = self.scan(f)
            recorded = None if manifest.checksums is None else manifest.checksums.get(f)
            if scan.error is not None:
                rep.problem("files", scan.error, version=v.id, file=f)
                readable = False
                continue
            if manifest.checksums is not None and recorded is None:
                rep.problem("files", "the manifest records no checksum for this file", version=v.id, file=f)
            elif recorded is not None and recorded != scan.sha256:
                rep.problem(
                    "files",
                    f"SHA-256 {scan.sha256} is not the published {recorded}: changed after publication",
                    version=v.id,
                    file=f,
                )
            for sid in scan.bad_samples:
                rep.problem(
                    "samples",
                    "content_sha256 is not the hash of the stored pixels",
                    version=v.id,
                    file=f,
                    sample_id=sid,
                )
            for split, n in scan.splits.items():
                counts[split] = counts.get(split, 0) + n
        if not readable:
            return
        expected = {"train": (manifest.n_train, v.n_train), "test": (manifest.n_test, v.n_test)}
        for split, (in_manifest, in_catalog) in expected.items():
            if counts.get(split, 0) != in_manifest or in_manifest != in_catalog:
                rep.problem(
                    "counts",
                    f"{counts.get(split, 0)} {split} samples in the files, {in_manifest} in the manifest, "
                    f"{in_catalog} in the catalog",
                    version=v.id,
                )
        self.check_identity(v, manifest)

    def check_export_manifest(self, v: Version, manifest: Manifest) -> None:
        """A clean version's folder keeps a copy of its manifest for readers of the folder alone: the same."""
        copy = self.ws.store.export_dir(v.dataset, v.id) / "manifest.json"
        rel = str(copy.relative_to(self.ws.store.home))
        try:
            same = json.loads(copy.read_text()) == manifest.to_json()
        except (OSError, ValueError):
            same = False
        if not same:
            self.report.problem(
                "files", "the export's manifest.json is not the published manifest", version=v.id, file=rel
            )

    def check_identity(self, v: Version, manifest: Manifest) -> None:
        """The version's id still derives from its content (ingested, red team) or its parent (clean)."""
        cols = self.version_columns(v.dataset, v.id)
        if cols is None:
            return
        if v.kind in ("ingested", "redteam"):
            pairs = [
                (sha, label, split)
                for split in ("train", "test")
                for sha, label in zip(cols.shas[split], cols.labels[split], strict=True)
            ]
            if version_id_for(pairs, v.dataset) != v.id:
                self.report.problem(
                    "samples",
                    "the samples' (content hash, label, split) no longer hash to the version id",
                    version=v.id,
                )
            return
        if v.kind != "clean" or manifest.parent_id is None:
            return
        parent = self.version_columns(v.dataset, manifest.parent_id)
        if parent is None:
            self.report.problem("files", f"parent version {manifest.parent_id} cannot be read", version=v.id)
            return
        extra = manifest.extra or {}
        excluded = set(extra.get("excluded_sample_ids", []))
        relabel = {sid: int(label) for sid, label in (extra.get("relabelled") or {}).items()}
        if clean_version_id(manifest.parent_id, excluded, relabel) != v.id:
            self.report.problem(
                "samples", "its parent, excluded and relabelled samples no longer hash to the version id", version=v.id
            )
        for split in ("train", "test"):
            keep = [i for i, sid in enumerate(parent.ids[split]) if split == "test" or sid not in excluded]
            want = [parent.ids[split][i] for i in keep]
            if cols.ids[split] != want:
                unexpected = sorted(set(cols.ids[split]) - set(want))
                self.report.problem(
                    "samples",
                    f"the {split} split is not its parent {manifest.parent_id}'s minus the excluded samples"
                    + (f" (not expected: {', '.join(unexpected[:5])})" if unexpected else ""),
                    version=v.id,
                    sample_id=unexpected[0] if unexpected else None,
                )
                continue
            labels = [relabel.get(parent.ids[split][i], parent.labels[split][i]) for i in keep]
            shas = [parent.shas[split][i] for i in keep]
            for sid, have, label, sha, parent_sha in zip(
                want, cols.labels[split], labels, cols.shas[split], shas, strict=True
            ):
                if have != label:
                    self.report.problem(
                        "samples",
                        f"label {have}, where its parent and relabelling give {label}",
                        version=v.id,
                        sample_id=sid,
                    )
                if sha != parent_sha:
                    self.report.problem(
                        "samples",
                        "its content is not the parent's sample's (content_sha256)",
                        version=v.id,
                        sample_id=sid,
                    )

    def scan(self, relpath: str) -> FileScan:
        if relpath not in self.scans:
            self.scans[relpath] = scan_file(self.ws.store.home / relpath)
            self.report.files += 1
            self.report.samples += self.scans[relpath].rows
        return self.scans[relpath]


def scan_file(path: Path) -> FileScan:
    """Hash a data file's bytes and every sample's pixels (a (H, W, C) prefix, then the raw bytes)."""
    if not path.is_file():
        return FileScan(None, error="the file is missing")
    scan = FileScan(file_sha256(path))
    bases: dict[tuple[int, int, int], Any] = {}
    columns = ["sample_id", "split", "content_sha256", "height", "width", "channels", "pixels"]
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=columns):
            n = batch.num_rows
            scan.rows += n
            col = batch.column("pixels")
            offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + n + 1]
            data = memoryview(col.buffers()[2]) if col.buffers()[2] is not None else memoryview(b"")
            shapes = zip(
                batch.column("height").to_pylist(),
                batch.column("width").to_pylist(),
                batch.column("channels").to_pylist(),
                strict=True,
            )
            recorded = batch.column("content_sha256").to_pylist()
            ids = batch.column("sample_id").to_pylist()
            starts, ends = offsets[:-1].tolist(), offsets[1:].tolist()
            for k, shape in enumerate(shapes):
                base = bases.get(shape)
                if base is None:
                    base = bases[shape] = hashlib.sha256(f"{shape[0]}x{shape[1]}x{shape[2]}:".encode())
                h = base.copy()
                h.update(data[starts[k] : ends[k]])
                if ends[k] - starts[k] != shape[0] * shape[1] * shape[2] or h.hexdigest() != recorded[k]:
                    scan.bad_samples.append(ids[k])
            for split, count in zip(
                *np.unique(batch.column("split").to_numpy(zero_copy_only=False), return_counts=True), strict=True
            ):
                scan.splits[str(split)] = scan.splits.get(str(split), 0) + int(count)
    except (OSError, pa.ArrowException) as exc:
        return FileScan(scan.sha256, error=f"cannot be read as a sample table: {exc}")
    return scan
