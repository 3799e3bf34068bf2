"""Ingest a source into a dataset: hash every sample, record its provenance, store it, make a version.

A dataset version is the union of each source's latest ingest. Re-ingesting data identical to what
a source already holds stores nothing and gives the same version.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from sanitize.catalog import Catalog, Dataset, Ingest, Source
from sanitize.config import DATASET_PATTERN, check_name
from sanitize.errors import InputError
from sanitize.faults import pause_point
from sanitize.ingest.labelmap import LabelPlan
from sanitize.ingest.readers import RawBatch, detect_format, read_source
from sanitize.store import SAMPLE_SCHEMA, Manifest, Store, TableWriter, content_hash, sample_id_for, version_id_for
from sanitize.versions import publish_version

SOURCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"


@dataclass
class IngestReport:
    """What one ingest read and what it changed."""

    dataset: str
    source: str
    ingest_id: str
    version_id: str
    previous_version_id: str | None
    n_samples: int
    n_train: int
    n_test: int
    stored: bool
    duplicates_within: int = 0
    duplicates_across: int = 0
    conflicting_labels: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    class_counts: dict[int, int] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    """The dataset's label map after this ingest (``class_names[label]``); None: labels are indices."""
    new_classes: list[str] = field(default_factory=list)
    """Names this source added to the label map, each at a new label."""
    label_map_version: int | None = None

    @property
    def changed(self) -> bool:
        return self.version_id != self.previous_version_id


def ingest_path(
    catalog: Catalog,
    store: Store,
    *,
    dataset: str,
    path: str | Path,
    source: str,
    format: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    split: str = "train",
    actor: str = "cli",
    new_classes: bool = False,
) -> IngestReport:
    """Read ``path`` (IDX, image folder, ``.npz`` or a Parquet/CSV table) as ``source`` into ``dataset``.

    ``new_classes`` lets a source whose class names are all new to the dataset add them
    (:mod:`sanitize.ingest.labelmap`); a source that shares a name with the dataset may always add.
    """
    path = Path(path)
    fmt = format or detect_format(path)
    batches = read_source(path, format=fmt, image_column=image_column, label_column=label_column, split=split)
    options: dict[str, Any] = {"split": split}
    if image_column is not None:
        options["image_column"] = image_column
    if label_column is not None:
        options["label_column"] = label_column
    return ingest_batches(
        catalog,
        store,
        dataset=dataset,
        batches=batches,
        source=source,
        uri=str(path.resolve()),
        fmt=fmt,
        actor=actor,
        options=options,
        new_classes=new_classes,
    )


def arrays_to_batches(
    x: np.ndarray, y: np.ndarray, split: str, *, batch_size: int = 4096, prefix: str | None = None
) -> Iterator[RawBatch]:
    """Wrap in-memory arrays ((N,H,W) or (N,H,W,C) uint8, (N,) int) as reader batches."""
    if len(x) != len(y):
        raise InputError(f"{len(x)} images but {len(y)} labels")
    if x.ndim == 3:
        x = x[..., None]
    for s in range(0, len(x), batch_size):
        xs, ys = x[s : s + batch_size], np.asarray(y[s : s + batch_size], dtype=np.int64)
        yield RawBatch(
            images=list(xs),
            labels=ys,
            splits=[split] * len(ys),
            locators=[f"{prefix or split}:{s + i}" for i in range(len(ys))],
        )


def ingest_batches(
    catalog: Catalog,
    store: Store,
    *,
    dataset: str,
    batches: Iterable[RawBatch],
    source: str,
    uri: str,
    fmt: str,
    actor: str = "cli",
    options: dict[str, Any] | None = None,
    new_classes: bool = False,
) -> IngestReport:
    """Hash, record and store ``batches`` as the new content of ``source``; return what changed.

    ``uri``, ``fmt`` and the reader's ``options`` are kept as the source's address, so a scheduled
    run can read it again (:func:`sanitize.schedule.refresh_sources`). Batches that carry
    ``class_names`` have them mapped to the dataset's labels through its label map
    (:class:`~sanitize.ingest.labelmap.LabelPlan`), which the ingest extends when they bring new names.
    """
    try:
        check_name("dataset", dataset, DATASET_PATTERN, "letters, digits, '.', '_' or '-'")
        check_name("source", source, SOURCE_PATTERN, "letters, digits, '.', '_', ':' or '-'")
    except ValueError as exc:
        raise InputError(str(exc)) from None
    ingest_id = f"ing-{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    plan = LabelPlan.load(catalog, store, dataset, source, uri, allow_new=new_classes)
    target = store.ingest_path(dataset, ingest_id)
    writer = TableWriter(target, SAMPLE_SCHEMA)
    digest = hashlib.sha256(f"{source}\n".encode())
    pairs: list[tuple[str, int, str]] = []
    seen: dict[str, str] = {}
    dup_within = 0
    examples: list[str] = []
    shape: tuple[int, ...] | None = None
    counts: Counter[tuple[str, int]] = Counter()
    try:
        for batch in batches:
            rows: dict[str, list[object]] = {name: [] for name in SAMPLE_SCHEMA.names}
            labels = plan.labels(batch)
            for image, label, split, locator in zip(batch.images, labels, batch.splits, batch.locators, strict=True):
                if shape is None:
                    shape = image.shape
                elif image.shape != shape:
                    raise InputError(f"{uri}: sample {locator} has shape {image.shape}, earlier samples {shape}")
                sha = content_hash(image)
                if sha in seen:
                    dup_within += 1
                    if len(examples) < 5:
                        examples.append(f"{locator} = {seen[sha]}")
                else:
                    seen[sha] = locator
                label_i = int(label)
                rows["sample_id"].append(sample_id_for(source, locator, sha))
                rows["split"].append(split)
                rows["label"].append(label_i)
                rows["content_sha256"].append(sha)
                rows["source"].append(source)
                rows["source_uri"].append(uri)
                rows["locator"].append(locator)
                rows["ingest_id"].append(ingest_id)
                rows["ingested_at"].append(now)
                rows["height"].append(image.shape[0])
                rows["width"].append(image.shape[1])
                rows["channels"].append(image.shape[2])
                rows["pixels"].append(np.ascontiguousarray(image).tobytes())
                digest.update(f"{locator}:{sha}:{label_i}:{split}\n".encode())
                pairs.append((sha, label_i, split))
                counts[(split, label_i)] += 1
            writer.write(pa.Table.from_pydict(rows, schema=SAMPLE_SCHEMA))
        if writer.rows == 0:
            raise InputError(f"{uri}: the source holds no samples")
    except BaseException:
        writer.abort()
        raise
    assert shape is not None
    ingest_digest = digest.hexdigest()
    n_train = sum(v for (s, _), v in counts.items() if s == "train")
    n_test = sum(v for (s, _), v in counts.items() if s == "test")
    pause_point("ingest.staged")  # the samples are in a temporary file, nothing is recorded

    with catalog.session() as session:
        try:
            plan.check_unchanged(session)
        except InputError:
            writer.abort()
            raise
        ds = session.get(Dataset, dataset)
        previous_version = ds.current_version if ds else None
        latest = _latest_ingests(session, dataset)
        # Compare with the other sources' current samples before anything is committed.
        other_files = [store.home / ing.file for src, ing in sorted(latest.items()) if src != source]
        all_pairs = list(pairs)
        own_labels = {sha: lab for sha, lab, _ in pairs}
        dup_across = conflicts = 0
        for f in other_files:
            t = _read_meta(f)
            other_shape = (t["height"][0], t["width"][0], t["channels"][0])
            if other_shape != shape:
                writer.abort()
                raise InputError(
                    f"{uri}: images of shape {shape} do not match the shape {other_shape} of "
                    f"dataset {dataset!r} (file {f.name})"
                )
            all_pairs.extend(zip(t["content_sha256"], t["label"], t["split"], strict=True))
            for sha, lab in zip(t["content_sha256"], t["label"], strict=True):
                if sha in own_labels:
                    dup_across += 1
                    conflicts += own_labels[sha] != lab
        if not any(split == "train" for _, _, split in all_pairs):
            writer.abort()
            raise InputError(
                f"{uri}: dataset {dataset!r} would have no training sample (this source holds "
                f"{n_test} test samples only)"
            )
        same = latest.get(source)
        if same is not None and same.digest == ingest_digest:
            # Identical to what this source already holds: store nothing twice.
            writer.abort()
            stored = False
            ingest_id = same.id
        else:
            writer.commit()
            pause_point("ingest.file")  # the file is in place, the catalog does not know it yet
            stored = True
            session.add(
                Ingest(
                    id=ingest_id,
                    dataset=dataset,
                    source=source,
                    uri=uri,
                    format=fmt,
                    digest=ingest_digest,
                    n_samples=n_train + n_test,
                    n_train=n_train,
                    n_test=n_test,
                    n_duplicates=dup_within,
                    file=str(target.relative_to(store.home)),
                )
            )
            if ds is None:
                ds = Dataset(name=dataset)
                session.add(ds)
            session.flush()
            latest[source] = session.get(Ingest, ingest_id)  # type: ignore[assignment]
        assert ds is not None
        plan.record(session, ingest_id, actor)
        address = session.get(Source, (dataset, source))
        if address is None:
            session.add(Source(dataset=dataset, name=source, uri=uri, format=fmt, options=options or {}))
        else:
            address.uri, address.format, address.options, address.updated_at = uri, fmt, options or {}, now
        version_id = version_id_for(all_pairs, dataset)
        files = tuple(sorted(str(ing.file) for ing in latest.values()))
        n_tr = sum(1 for *_, s in all_pairs if s == "train")
        manifest = Manifest(
            version_id=version_id,
            dataset=dataset,
            kind="ingested",
            files=files,
            n_train=n_tr,
            n_test=len(all_pairs) - n_tr,
            height=shape[0],
            width=shape[1],
            channels=shape[2],
            classes=tuple(sorted({lab for _, lab, _ in all_pairs})),
            parent_id=previous_version,
            class_names=plan.names,
            label_map_version=plan.map_version,
        )
        publish_version(session, store, manifest)
        ds.current_version = version_id
        catalog.audit(
            session,
            actor,
            "ingest",
            f"{dataset}/{source}",
            ingest_id=ingest_id,
            uri=uri,
            format=fmt,
            stored=stored,
            version=version_id,
            n_samples=n_train + n_test,
        )

    return IngestReport(
        dataset=dataset,
        source=source,
        ingest_id=ingest_id,
        version_id=version_id,
        previous_version_id=previous_version,
        n_samples=n_train + n_test,
        n_train=n_train,
        n_test=n_test,
        stored=stored,
        duplicates_within=dup_within,
        duplicates_across=dup_across,
        conflicting_labels=conflicts,
        duplicate_examples=examples,
        class_counts={lab: c for (s, lab), c in sorted(counts.items()) if s == "train"},
        class_names=plan.names,
        new_classes=list(plan.added),
        label_map_version=plan.map_version,
    )


def _latest_ingests(session: Session, dataset: str) -> dict[str, Ingest]:
    rows = session.scalars(select(Ingest).where(Ingest.dataset == dataset).order_by(Ingest.created_at)).all()
    latest: dict[str, Ingest] = {}
    for row in rows:
        latest[row.source] = row
    return latest


def _read_meta(path: Path) -> dict[str, list[Any]]:
    return pq.read_table(path, columns=["content_sha256", "label", "split", "height", "width", "channels"]).to_pydict()
