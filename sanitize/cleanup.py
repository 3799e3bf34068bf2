"""Collecting what the store holds that nothing refers to: ``sanitize gc``.

Two kinds of debris build up in a data folder:

- temporary files (``.NAME.XXXX.tmp``) of writes that never finished: a process killed mid-ingest or
  mid-run leaves them, since every write goes to a temporary file renamed into place at the end;
- data no catalog row refers to: an ingest's Parquet file whose ingest was never recorded (killed
  between the file and the catalog), a red-team copy that another run's copy of the same data made
  spare (releases before the one publication policy kept one per run), a version manifest or an
  export folder whose version row was never written, a run folder whose run is not in the catalog.

What any ingest, version (its manifest and every file it lists), export or run refers to is never a
candidate, nor is the catalog itself or the reference-model cache (``models/``: costly to rebuild,
and each entry is a whole model, not debris). So that a write in progress in another process is not
taken for debris, only what has not changed for ``older_than`` is collected.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from sanitize.catalog import Ingest, Run, Version
from sanitize.workspace import Workspace

DEFAULT_OLDER_THAN = timedelta(minutes=10)
"""A file or folder untouched for this long is no write in progress: a writer touches its temporary
file with every batch, and between a file's rename and its catalog row there are milliseconds."""


@dataclass(frozen=True)
class Debris:
    """One thing ``gc`` would remove: its path relative to the data folder, bytes, and why."""

    path: str
    bytes: int
    why: str


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _last_change(path: Path) -> float:
    if path.is_dir():
        return max([path.stat().st_mtime, *(f.stat().st_mtime for f in path.rglob("*"))])
    return path.stat().st_mtime


def referenced(ws: Workspace) -> set[str]:
    """Every path (relative to the data folder) that an ingest, a version, an export or a run refers to."""
    refs: set[str] = set()
    with ws.catalog.session() as s:
        refs.update(s.scalars(select(Ingest.file)))
        versions = s.execute(select(Version.id, Version.dataset, Version.manifest, Version.kind)).all()
        refs.update(f"runs/{run_id}" for run_id in s.scalars(select(Run.id)))
    for vid, dataset, manifest_path, kind in versions:
        refs.add(manifest_path)
        if (ws.store.home / manifest_path).is_file():
            refs.update(ws.store.manifest(dataset, vid).files)
        if kind == "clean":
            refs.add(str(ws.store.export_dir(dataset, vid).relative_to(ws.store.home)))
    return refs


def find_debris(ws: Workspace, *, older_than: timedelta = DEFAULT_OLDER_THAN) -> list[Debris]:
    """What ``gc`` would remove, sorted by path (see the module's docstring)."""
    home = ws.store.home
    refs = referenced(ws)
    cutoff = time.time() - older_than.total_seconds()
    found: dict[Path, str] = {}
    for area in ("datasets", "exports", "runs"):
        for tmp in (home / area).rglob(".*.tmp") if (home / area).is_dir() else ():
            found[tmp] = "temporary file of a write that never finished"
    for ingest in home.glob("datasets/*/ingests/*.parquet"):
        if str(ingest.relative_to(home)) not in refs:
            found[ingest] = "data file no ingest or version refers to"
    for manifest in home.glob("datasets/*/versions/*.json"):
        if str(manifest.relative_to(home)) not in refs:
            found[manifest] = "manifest of a version the catalog does not hold"
    for export in home.glob("exports/*/*"):
        if export.is_dir() and str(export.relative_to(home)) not in refs:
            found[export] = "export of a version the catalog does not hold"
    for run in home.glob("runs/*"):
        if run.is_dir() and str(run.relative_to(home)) not in refs:
            found[run] = "folder of a run the catalog does not hold"
    debris = []
    for path, why in found.items():
        inside_tmp = any(p in found and p != path for p in path.parents)
        if inside_tmp or _last_change(path) > cutoff:
            continue
        debris.append(Debris(str(path.relative_to(home)), _size(path), why))
    return sorted(debris, key=lambda d: d.path)


def collect(ws: Workspace, debris: list[Debris], *, actor: str = "gc") -> int:
    """Remove ``debris`` (as :func:`find_debris` listed it) and audit it; return the bytes freed.

    Each path is checked again against the catalog's references first, so what became referred to
    since it was listed stays.
    """
    refs = referenced(ws)
    freed = 0
    removed = []
    for item in debris:
        if item.path in refs:
            continue
        path = ws.store.home / item.path
        if not path.exists():
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        freed += item.bytes
        removed.append(item.path)
    with ws.catalog.session() as s:
        ws.catalog.audit(s, actor, "gc", str(ws.store.home), removed=removed, bytes=freed)
    return freed
