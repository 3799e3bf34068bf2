"""A cleaning run's record: its context on disk, its row in the catalog, starting and failing it.

Every stage of a run finds its inputs and outputs through the :class:`RunContext` (saved as the run's
``context.json``), so a Prefect flow can hand stages paths rather than arrays, and a run recorded by
an earlier release loads with the configuration it actually ran (:meth:`RunContext.load`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from sanitize.catalog import Catalog, Run, Version
from sanitize.config import RunConfig
from sanitize.errors import InputError, SanitizeError
from sanitize.faults import pause_point
from sanitize.processes import HEARTBEAT_S, host_name, process_start
from sanitize.store import Manifest, atomic_write_json
from sanitize.workspace import Workspace

MIN_IMAGE_SIDE = 8
"""The smallest image side a run cleans: the package's models and the detectors are built and tested
from scikit-learn's 8x8 digits up (1x1 images failed deep inside SPECTRE)."""


@dataclass
class RunContext:
    """What every stage needs to find a run's inputs and outputs; saved as ``context.json``."""

    run_id: str
    dataset: str
    ingested_version: str
    version: str
    run_dir: Path
    config: RunConfig
    timings: dict[str, float] = field(default_factory=dict)

    def save(self) -> None:
        atomic_write_json(
            self.run_dir / "context.json",
            {
                "run_id": self.run_id,
                "dataset": self.dataset,
                "ingested_version": self.ingested_version,
                "version": self.version,
                "config": self.config.model_dump(mode="json"),
                "timings": self.timings,
            },
        )

    @classmethod
    def load(cls, ws: Workspace, run_id: str) -> RunContext:
        path = ws.store.run_dir(run_id) / "context.json"
        if not path.is_file():
            raise SanitizeError(f"run {run_id} has no context at {path}")
        obj = json.loads(path.read_text())
        return cls(
            obj["run_id"],
            obj["dataset"],
            obj["ingested_version"],
            obj["version"],
            path.parent,
            RunConfig.model_validate(_migrate_config(dict(obj["config"]), path.parent)),
            obj.get("timings", {}),
        )

    def manifest(self, ws: Workspace) -> Manifest:
        return ws.store.manifest(self.dataset, self.version)

    def stage(self, name: str) -> StageTimer:
        """Time a stage: ``with ctx.stage("detect"): ...`` records its seconds in ``timings``."""
        return StageTimer(self, name)


def _migrate_config(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A configuration recorded by an earlier release, completed with what that release did.

    Runs recorded before the clean model's recipe could be set retrained as the reference model
    trained: unaugmented, and for the epochs their ``model_clean.json`` records.
    """
    config.setdefault("retrain_augment", "none")
    if "retrain_epochs" not in config:
        clean = run_dir / "model_clean.json"
        config["retrain_epochs"] = json.loads(clean.read_text())["epochs"] if clean.is_file() else None
    return config


class StageTimer:
    """Records a stage's wall-clock seconds in the run's timings and saves the context."""

    def __init__(self, ctx: RunContext, stage: str):
        self.ctx, self.stage = ctx, stage

    def __enter__(self) -> None:
        pause_point(self.stage)
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.ctx.timings[self.stage] = round(time.perf_counter() - self.start, 3)
        self.ctx.save()


def git_commit() -> str:
    """The package's git commit (short), or ``unknown`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    """This machine in a few words, for the records: host, architecture, CPU count."""
    return f"{platform.node()} {platform.machine()} {os.cpu_count() or 1} cpu"


def new_run_id() -> str:
    """A run id that sorts by start time: ``run-YYYYmmdd-HHMMSS-xxxxxx``."""
    return f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def check_run(ws: Workspace, config: RunConfig, check: Callable[[Manifest], None] | None = None) -> str:
    """Resolve the dataset version a run of ``config`` would clean and check that it can: refused with
    a clear error, writing nothing, otherwise. ``check`` looks at the version's manifest too (the
    conductor checks a user's model there). Returns the version id."""
    with ws.catalog.session() as s:
        ds = ws.catalog.dataset(s, config.dataset)
        version_id = config.version or ds.current_version
        if version_id is None:
            raise InputError(f"dataset {config.dataset!r} has no version yet")
        version = ws.catalog.version(s, version_id)
        if version.dataset != config.dataset:
            raise InputError(f"version {version_id} belongs to dataset {version.dataset!r}, not {config.dataset!r}")
    manifest = _check_cleanable(ws, config, version_id)
    if check is not None:
        check(manifest)
    return version_id


def start_run(ws: Workspace, config: RunConfig, check: Callable[[Manifest], None] | None = None) -> RunContext:
    """Record a running run of ``config``, once :func:`check_run` (with ``check``) let it through."""
    version_id = check_run(ws, config, check)
    run_id = new_run_id()
    run_dir = ws.store.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=False)
    ctx = RunContext(run_id, config.dataset, version_id, version_id, run_dir, config)
    ctx.save()
    with ws.catalog.session() as s:
        s.add(
            Run(
                id=run_id,
                dataset=config.dataset,
                version_id=version_id,
                status="running",
                config=config.model_dump(mode="json"),
                config_fingerprint=config.fingerprint(),
                host=host_name(),
                pid=os.getpid(),
                process_start=process_start(os.getpid()),
                heartbeat_at=datetime.now(UTC),
            )
        )
        ws.catalog.audit(s, "pipeline", "run.start", run_id, dataset=config.dataset, version=version_id)
    _Heartbeat.start(ws.catalog, run_id)
    return ctx


class _Heartbeat:
    """Refreshes a running run's ``heartbeat_at`` every :data:`~sanitize.processes.HEARTBEAT_S` from a
    daemon thread of the process that runs it, until the run ends (or the process does)."""

    _running: dict[str, threading.Event] = {}
    _lock = threading.Lock()

    @classmethod
    def start(cls, catalog: Catalog, run_id: str) -> None:
        stop = threading.Event()
        with cls._lock:
            cls._running[run_id] = stop
        threading.Thread(
            target=cls._beat, args=(catalog, run_id, stop), name=f"heartbeat {run_id}", daemon=True
        ).start()

    @classmethod
    def stop(cls, run_id: str) -> None:
        with cls._lock:
            stop = cls._running.pop(run_id, None)
        if stop is not None:
            stop.set()

    @staticmethod
    def _beat(catalog: Catalog, run_id: str, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                with catalog.session() as s:
                    run = s.get(Run, run_id)
                    if run is None or run.status != "running":
                        return
                    run.heartbeat_at = datetime.now(UTC)
            except Exception:  # the catalog went away (a test's folder, a closed database): stop beating
                return


def _check_cleanable(ws: Workspace, config: RunConfig, version_id: str) -> Manifest:
    """Refuse a version whose train split cannot be cleaned, or a red team aimed at no class of it."""
    manifest = ws.store.manifest(config.dataset, version_id)
    ws.store.check_files(manifest)  # a file changed since publication is refused, not cleaned
    if min(manifest.height, manifest.width) < MIN_IMAGE_SIDE:
        raise InputError(
            f"dataset {config.dataset!r} version {version_id}: its images are {manifest.height}x{manifest.width}; "
            f"cleaning needs at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels"
        )
    labels = ws.store.read_column_table(manifest, ["label"], split="train").column("label").to_numpy()
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise InputError(
            f"dataset {config.dataset!r} version {version_id}: the train split has "
            f"{len(classes)} class; cleaning needs at least 2"
        )
    small = classes[counts < 2]
    if len(small):
        raise InputError(
            f"dataset {config.dataset!r} version {version_id}: class(es) {small.tolist()} have fewer "
            f"than 2 training samples"
        )
    if config.redteam is not None and config.redteam.target not in set(classes.tolist()):
        raise InputError(
            f"red-team target class {config.redteam.target} is not a class of {config.dataset!r} "
            f"(classes: {classes.tolist()})"
        )
    return manifest


def fail_run(ws: Workspace, run_id: str, error: BaseException) -> None:
    """Mark a run failed with its error; it never produces a clean version."""
    _Heartbeat.stop(run_id)
    with ws.catalog.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            return
        run.status = "failed"
        run.error = f"{type(error).__name__}: {error}"
        run.finished_at = datetime.now(UTC)
        # A run that failed after its export leaves no clean version a training job could pick up.
        for version in s.scalars(select(Version).where(Version.run_id == run_id, Version.kind == "clean")):
            version.status = "failed"
        ws.catalog.audit(
            s,
            "pipeline",
            "run.fail",
            run_id,
            error=run.error,
            traceback="".join(traceback.format_exception(error))[-4000:],
        )


def complete_run(ws: Workspace, ctx: RunContext, summary: dict[str, Any], clean_version: str) -> None:
    """Record a finished run's summary (``summary.json`` and the catalog) and mark it completed."""
    _Heartbeat.stop(ctx.run_id)
    atomic_write_json(ctx.run_dir / "summary.json", summary)
    with ws.catalog.session() as s:
        run = ws.catalog.run(s, ctx.run_id)
        run.status = "completed"
        run.summary = json.loads(json.dumps(summary, default=str))
        run.clean_version_id = clean_version
        run.finished_at = datetime.now(UTC)
        ws.catalog.audit(
            s, "pipeline", "run.complete", ctx.run_id, clean_version=clean_version, quarantined=summary["quarantined"]
        )
