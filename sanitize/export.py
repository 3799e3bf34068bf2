"""Clean dataset versions for training jobs: Parquet files plus a manifest with the lineage.

A clean version holds the kept samples of a run (train split) and the version's test split. Its
manifest names its own id, the parent version, the run, the run's configuration and every excluded
sample id, so a training job can say exactly what it trained on.

What is read is first checked against the checksums its manifest recorded at publication
(:meth:`sanitize.store.Store.check_files`): a parent version or a version to copy out whose files
changed since is refused, naming the file and the version, rather than passed on as clean.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from sanitize.catalog import Run, Version
from sanitize.errors import InputError, NotFoundError
from sanitize.runs import ApprovalRefused, detection_failure
from sanitize.store import (
    SAMPLE_SCHEMA,
    Manifest,
    TableWriter,
    atomic_write_bytes,
    atomic_write_json,
    decode_pixels,
    temp_dir_beside,
)
from sanitize.versions import is_published, publish_version
from sanitize.workspace import Workspace

_LABEL_NAME_AT = SAMPLE_SCHEMA.get_field_index("label") + 1
NAMED_SCHEMA = SAMPLE_SCHEMA.insert(_LABEL_NAME_AT, pa.field("label_name", pa.string(), nullable=False))
"""An exported copy's samples: :data:`~sanitize.store.SAMPLE_SCHEMA` with each label's class name."""


def clean_version_id(parent: str, excluded: set[str], relabel: dict[str, int] | None = None) -> str:
    """A clean version's id: a hash of its parent, the excluded ids and any relabelling."""
    h = hashlib.sha256(parent.encode())
    for sid in sorted(excluded):
        h.update(b"\n" + sid.encode())
    for sid, label in sorted((relabel or {}).items()):
        h.update(f"\n{sid}={label}".encode())
    return "c" + h.hexdigest()[:15]


def _relabelled(batch: pa.RecordBatch, relabel: dict[str, int]) -> pa.RecordBatch:
    ids = batch.column("sample_id").to_pylist()
    labels = batch.column("label").to_pylist()
    new = pa.array([relabel.get(sid, lab) for sid, lab in zip(ids, labels, strict=True)], pa.int64())
    return batch.set_column(batch.schema.get_field_index("label"), "label", new)


def write_split(
    ws: Workspace,
    manifest: Manifest,
    split: str,
    target: Path,
    *,
    exclude: set[str] | None = None,
    relabel: dict[str, int] | None = None,
    label_names: tuple[str, ...] | None = None,
) -> int:
    """Stream one split of a version into ``target`` (via a temp file), minus ``exclude``, with
    ``relabel``'s labels, and with a ``label_name`` column when ``label_names`` (``names[label]``)
    are given; return the rows written."""
    writer = TableWriter(target, SAMPLE_SCHEMA if label_names is None else NAMED_SCHEMA)
    names = None if label_names is None else np.array(label_names, dtype=object)
    try:
        for batch in ws.store.iter_samples(manifest, split=split, exclude=exclude, batch_size=4096):
            batch = _relabelled(batch, relabel) if relabel else batch
            if names is not None:
                columns = list(batch.columns)
                columns.insert(_LABEL_NAME_AT, pa.array(names[batch.column("label").to_numpy()], pa.string()))
                batch = pa.RecordBatch.from_arrays(columns, schema=NAMED_SCHEMA)
            writer.write(batch)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.rows


def export_clean_version(
    ws: Workspace,
    dataset: str,
    parent: str,
    run_id: str,
    excluded: set[str],
    config: dict[str, Any],
    *,
    relabel: dict[str, int] | None = None,
    status: str = "provisional",
) -> str:
    """Write the clean version of ``parent`` without ``excluded`` (and with ``relabel``'s labels);
    return its id. Idempotent: the same inputs give the same id, and a version already published is
    left as it was (:func:`sanitize.versions.publish_version`).

    Training samples whose content was confirmed as poison in another run of the dataset are left
    out as well, whatever this run thought of them; the manifest names each with the run that
    confirmed it (``extra["confirmed_elsewhere"]``).
    """
    if status == "approved":
        _check_approvable(ws, run_id)
    store = ws.store
    parent_manifest = store.manifest(dataset, parent)
    store.check_files(parent_manifest)
    relabel = relabel or {}
    with ws.catalog.session() as s:
        confirmed = ws.catalog.confirmed_poisons(s, dataset, other_than=run_id)
    elsewhere: dict[str, str] = {}
    if confirmed:
        train = store.read_column_table(parent_manifest, ["sample_id", "content_sha256"], split="train")
        for sid, sha in zip(
            train.column("sample_id").to_pylist(), train.column("content_sha256").to_pylist(), strict=True
        ):
            if sha in confirmed:
                elsewhere[sid] = confirmed[sha]
    excluded = set(excluded) | set(elsewhere)
    relabel = {sid: label for sid, label in relabel.items() if sid not in elsewhere}
    vid = clean_version_id(parent, excluded, relabel)
    with ws.catalog.session() as s:
        published = is_published(s, vid)
    # The files are written outside a catalog transaction (they take seconds to minutes); two
    # exports of the same version at once write the same bytes, and publish_version keeps one row.
    if not published:
        manifest = _write_clean_version(ws, parent_manifest, vid, run_id, excluded, elsewhere, relabel, config)
    with ws.catalog.session() as s:
        if not published:
            publish_version(s, ws.store, manifest, run_id=run_id, status=status)
        elif status == "approved":
            # The same version, published provisional by an earlier run: its files stay as they
            # were, and this approval (a policy, a review) settles it.
            existing = s.get(Version, vid)
            if existing is not None and existing.status == "provisional":
                existing.status = "approved"
                ws.catalog.audit(s, "pipeline", "version.approve", vid, run=run_id, by="export")
        ws.catalog.audit(
            s, "pipeline", "export", vid, dataset=dataset, parent=parent, run=run_id, excluded=len(excluded)
        )
    return vid


def _check_approvable(ws: Workspace, run_id: str) -> None:
    """Refuse to approve a version of a red-team run whose figures say the poison is still in it
    (:func:`sanitize.runs.detection_failure`), whoever asks: the review's last decision too."""
    with ws.catalog.session() as s:
        run = s.get(Run, run_id)
        failure = detection_failure(run.summary or {}) if run is not None else None
    if failure is not None:
        raise ApprovalRefused(
            f"run {run_id}: the decisions are recorded, but its clean version is not approved: {failure}. "
            "Run it again: the poisons confirmed here stay out of the next run, which measures again"
        )


def _write_clean_version(
    ws: Workspace,
    parent: Manifest,
    vid: str,
    run_id: str,
    excluded: set[str],
    elsewhere: dict[str, str],
    relabel: dict[str, int],
    config: dict[str, Any],
) -> Manifest:
    """Write a new clean version's files and the export's copy of its manifest; return the manifest."""
    named = ws.store.labelled_ancestor(parent)  # a red-team parent records none: its own parent did
    out_dir = ws.store.export_dir(parent.dataset, vid)
    files = []
    counts = {}
    for split in ("train", "test"):
        train = split == "train"
        counts[split] = write_split(
            ws,
            parent,
            split,
            out_dir / f"{split}.parquet",
            exclude=excluded if train else None,
            relabel=relabel if train else None,
        )
        files.append(str((out_dir / f"{split}.parquet").relative_to(ws.store.home)))
    manifest = Manifest(
        version_id=vid,
        dataset=parent.dataset,
        kind="clean",
        files=tuple(files),
        n_train=counts["train"],
        n_test=counts["test"],
        height=parent.height,
        width=parent.width,
        channels=parent.channels,
        classes=parent.classes,
        parent_id=parent.version_id,
        class_names=named.class_names if named is not None else None,
        label_map_version=named.label_map_version if named is not None else None,
        extra={
            "run_id": run_id,
            "config": config,
            "excluded_sample_ids": sorted(excluded),
            "confirmed_elsewhere": dict(sorted(elsewhere.items())),
            "relabelled": dict(sorted(relabel.items())),
            "created_at": datetime.now(UTC).isoformat(),
        },
    )
    manifest = ws.store.with_checksums(manifest)
    atomic_write_json(out_dir / "manifest.json", manifest.to_json())
    return manifest


def with_class_names(ws: Workspace, manifest: Manifest) -> Manifest:
    """``manifest`` with the name of every label (:meth:`sanitize.store.Store.class_names`): its own
    or its parents' recorded names, else ``"0"``, ``"1"``, ...; for the copies a version is written to."""
    found = ws.store.labelled_ancestor(manifest)
    return replace(
        manifest,
        class_names=ws.store.class_names(manifest),
        label_map_version=found.label_map_version if found is not None else None,
    )


def copy_out(ws: Workspace, version: str, out: Path, fmt: str) -> list[Path]:
    """Write a version to ``out`` as ``parquet`` (train/test files with a ``label_name`` column +
    manifest.json), ``npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``, ``sample_ids_train``,
    ``class_names``), each file via a temp path, or ``imagefolder`` (``split/class name/sample_id.png``
    + manifest.json, built in a temporary folder beside ``out`` and renamed to it, so ``out`` must not
    exist or be empty). Every copy's manifest.json carries ``class_names``, the name of each label."""
    with ws.catalog.session() as s:
        v = s.get(Version, version)
        if v is None:
            raise NotFoundError(f"unknown dataset version {version!r}")
        dataset = v.dataset
    manifest = ws.store.manifest(dataset, version)
    ws.store.check_files(manifest)
    named = with_class_names(ws, manifest)
    if fmt == "imagefolder":
        return _write_imagefolder(ws, named, out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    names = named.class_names or ()
    if fmt == "parquet":
        for split in ("train", "test"):
            target = out / f"{split}.parquet"
            write_split(ws, manifest, split, target, label_names=names)
            written.append(target)
        atomic_write_json(out / "manifest.json", named.to_json())
        written.append(out / "manifest.json")
        return written
    if fmt == "npz":
        arrays: dict[str, np.ndarray] = {}
        for split in ("train", "test"):
            xs, ys, ids = [], [], []
            for batch in ws.store.iter_samples(manifest, split=split, batch_size=4096):
                xs.append(decode_pixels(batch))
                ys.append(batch.column("label").to_numpy())
                ids.extend(batch.column("sample_id").to_pylist())
            if xs:
                arrays[f"x_{split}"] = np.concatenate(xs)
                arrays[f"y_{split}"] = np.concatenate(ys)
                arrays[f"sample_ids_{split}"] = np.array(ids)
        arrays["class_names"] = np.array(names, dtype=str)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        target = out / f"{dataset}-{version}.npz"
        atomic_write_bytes(target, buf.getvalue())
        atomic_write_json(out / "manifest.json", named.to_json())
        return [target, out / "manifest.json"]
    raise ValueError(f"unknown export format {fmt!r}; choose parquet, npz or imagefolder")


_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _write_imagefolder(ws: Workspace, manifest: Manifest, out: Path) -> list[Path]:
    """``out/split/class name/sample_id.png`` for every sample, plus ``out/manifest.json``; all or
    nothing. ``manifest`` carries the names (:func:`with_class_names`)."""
    names = manifest.class_names or ()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; an imagefolder export writes a new one")
    mode = _PIL_MODES.get(manifest.channels)
    if mode is None:
        raise InputError(f"version {manifest.version_id}: {manifest.channels}-channel images cannot be PNG files")
    tmp = temp_dir_beside(out)
    try:
        for split in ("train", "test"):
            for batch in ws.store.iter_samples(manifest, split=split, batch_size=4096):
                images = decode_pixels(batch)
                for image, label, sid in zip(
                    images, batch.column("label").to_pylist(), batch.column("sample_id").to_pylist(), strict=True
                ):
                    folder = tmp / split / names[label]
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image[..., 0] if mode == "L" else image).save(folder / f"{sid}.png")
        atomic_write_json(tmp / "manifest.json", manifest.to_json())
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / split for split in ("train", "test") if (out / split).is_dir()] + [out / "manifest.json"]
