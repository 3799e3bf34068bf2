"""A cleaning run's record: its context on disk, its row in the catalog, starting and failing it.

Every stage of a run finds its inputs and outputs through the :class:`RunContext` (saved as the run's
``context.json``), so a Prefect flow can hand stages paths rather than arrays, and a run recorded by
an earlier release loads with the configuration it actually ran (:meth:`RunContext.load`).
"""

from __future__ import annotations

import json
import logging
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
from typing import Any, Literal

import numpy as np
from sqlalchemy import func, select

from sanitize.catalog import Catalog, QuarantineEntry, Run, Version
from sanitize.config import RunConfig
from sanitize.errors import InputError, SanitizeError
from sanitize.faults import pause_point
from sanitize.processes import HEARTBEAT_S, host_name, process_start
from sanitize.store import Manifest, atomic_write_json
from sanitize.workspace import Workspace

log = logging.getLogger("sanitize.run")
"""A run's progress for a person: each stage's start and duration, what the run cannot measure, and
its approval. The CLI prints it on stderr; the Prefect flow hands it to each task run's log."""

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
    stage_now: str | None = None
    """The stage running now (with ``stage_started_at``, an ISO time), for pages that show progress."""
    stage_started_at: str | None = None
    approval: dict[str, Any] | None = None
    """What the export decided about approving the clean version (:func:`approval_for`)."""
    stage_progress: str | None = None
    """Where the running stage is, in words (training: its epoch and the time left)."""

    def report_progress(self, text: str) -> None:
        """Record where the running stage is (``stage_progress``), for the run page."""
        self.stage_progress = text
        self.save()

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
                "stage": self.stage_now,
                "stage_started_at": self.stage_started_at,
                "approval": self.approval,
                "stage_progress": self.stage_progress,
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
            obj.get("stage"),
            obj.get("stage_started_at"),
            obj.get("approval"),
            obj.get("stage_progress"),
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
    """Says when a stage starts and how long it took (:data:`log`), records its wall-clock seconds in
    the run's timings, and keeps the stage running now in the context while it runs."""

    def __init__(self, ctx: RunContext, stage: str):
        self.ctx, self.stage = ctx, stage

    def __enter__(self) -> None:
        pause_point(self.stage)
        self.ctx.stage_now, self.ctx.stage_started_at = self.stage, datetime.now(UTC).isoformat()
        self.ctx.save()
        log.info("%s ...", self.stage.replace("_", " "))
        self.start = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        seconds = round(time.perf_counter() - self.start, 3)
        self.ctx.stage_now = self.ctx.stage_started_at = self.ctx.stage_progress = None
        if kind is None:
            self.ctx.timings[self.stage] = seconds
            log.info("%s done in %.1f s", self.stage.replace("_", " "), seconds)
        else:  # the context keeps where it failed; fail_run records the error
            self.ctx.stage_now = self.stage
            log.error("%s failed after %.1f s (run %s)", self.stage.replace("_", " "), seconds, self.ctx.run_id)
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


# --- approval -------------------------------------------------------------------------------------
MIN_RECALL = 0.5
"""A red-team run whose detection found less than this share of its poisons approves nothing."""
ASR_MARGIN = 0.02
"""Nor one whose clean model's attack success rate is more than this above the clean-data floor."""
ASSUMED_ASR_FLOOR = 0.03
"""The clean-data floor where the run did not measure one (``asr_floor`` among its figures): the
trigger's success on a model trained on clean data. On Fashion-MNIST the package's triggers reach
0.2-1.9 % on such a model, 2.5 % on a 4-epoch one (``bench/RESULTS.md``); 3 % and the 2 points of
:data:`ASR_MARGIN` let a clean model's ASR be at most 5 %."""


class ApprovalRefused(SanitizeError):
    """A clean version may not be approved (its red team shows the poison is still in it, or its
    quarantine still waits for review)."""


@dataclass(frozen=True)
class ApprovalPolicy:
    """Who approves a clean version that its run leaves nothing to review in, and where that was said."""

    policy: Literal["auto", "review"]
    given_by: str


def approval_policy(ws: Workspace, config: RunConfig, run_id: str | None = None) -> ApprovalPolicy:
    """The policy of a run of ``config`` (``run_id``: the run itself, left out of the dataset's history).

    ``--approve`` when given; else the dataset's policy, the one given to its latest run that had one;
    else ``review`` until the dataset has an approved clean version (a person looked at its first
    one), then ``auto``.
    """
    if config.approve is not None:
        return ApprovalPolicy(config.approve, "--approve")
    with ws.catalog.session() as s:
        earlier = s.execute(
            select(Run.id, Run.config).where(Run.dataset == config.dataset).order_by(Run.started_at.desc())
        ).all()
        for rid, recorded in earlier:
            if rid != run_id and (recorded or {}).get("approve") in ("auto", "review"):
                return ApprovalPolicy(recorded["approve"], f"the dataset's policy, given to run {rid}")
        approved = s.scalar(
            select(func.count())
            .select_from(Version)
            .where(Version.dataset == config.dataset, Version.kind == "clean", Version.status == "approved")
        )
    if approved:
        return ApprovalPolicy("auto", "by default: the dataset has an approved version")
    return ApprovalPolicy("review", "by default: a person approves a dataset's first clean version")


def percent(value: float | None) -> str:
    """``0.979`` as ``97.9 %``; ``n/a`` for a figure not measured."""
    return "n/a" if value is None else f"{value * 100:.1f} %"


def detection_failure(figures: dict[str, Any]) -> str | None:
    """Why a red-team run's figures (its summary, or the evaluation's) forbid approving its clean
    version, in words, or None: recall under :data:`MIN_RECALL`, or a measured ASR after cleaning more
    than :data:`ASR_MARGIN` above the clean-data floor (``asr_floor``, else :data:`ASSUMED_ASR_FLOOR`).
    A run that is no red team (no ``recall``) is never refused here."""
    recall = figures.get("recall")
    if recall is None:
        return None
    before, after, floor = figures.get("asr_before"), figures.get("asr_after"), figures.get("asr_floor")
    problems = []
    if recall < MIN_RECALL:
        problems.append(f"it found under {MIN_RECALL:.0%} of the poisons")
    if after is not None:
        base = ASSUMED_ASR_FLOOR if floor is None else floor
        if after > base + ASR_MARGIN:
            problems.append(
                f"the ASR after cleaning is over the clean-data floor ({percent(base)}, "
                f"{'assumed' if floor is None else 'measured'}) + {ASR_MARGIN * 100:.0f} points"
            )
    if not problems:
        return None
    return (
        f"detection failed: recall {recall * 100:.0f} %, ASR {percent(before)} before -> {percent(after)} after "
        f"({'; '.join(problems)})"
    )


def approval_for(ws: Workspace, ctx: RunContext, figures: dict[str, Any], pending: int) -> dict[str, Any]:
    """Whether the run's clean version is published ``approved`` or ``provisional``, and why.

    Provisional while ``pending`` entries wait for a reviewer (the last decision approves), when the
    red team says the detection failed (:func:`detection_failure`), or when the run leaves nothing to
    review but its policy (:func:`approval_policy`) is ``review``.
    """
    policy = approval_policy(ws, ctx.config, ctx.run_id)
    failure = detection_failure(figures)
    if failure is not None:
        status, why = "provisional", f"{failure}; its clean version is not approved"
    elif pending:
        status, why = "provisional", f"{pending} quarantined sample(s) wait for review; the last decision approves"
    elif policy.policy == "auto":
        status, why = "approved", "nothing left to review: approved at once (policy auto)"
    else:
        status = "provisional"
        why = f"nothing left to review; a person approves it (policy review): sanitize approve {ctx.run_id}"
    return {
        "policy": policy.policy,
        "policy_from": policy.given_by,
        "version_status": status,
        "why": why,
        "detection_failed": failure,
    }


def approve_run(ws: Workspace, run_id: str, *, reviewer: str, note: str | None = None) -> str:
    """A person approves a completed run's clean version that waits with nothing left to review
    (policy ``review``); returns its id. Refused, saying why, while entries are pending, when the red
    team says the detection failed, or for a run without a clean version."""
    if not reviewer.strip():
        raise ValueError("an approval needs a reviewer name")
    with ws.catalog.session() as s:
        run = ws.catalog.run(s, run_id)
        if run.status != "completed" or run.clean_version_id is None:
            raise InputError(f"run {run_id} is {run.status}: only a completed run's clean version can be approved")
        pending = s.scalar(
            select(func.count())
            .select_from(QuarantineEntry)
            .where(QuarantineEntry.run_id == run_id, QuarantineEntry.status == "pending")
        )
        if pending:
            raise ApprovalRefused(
                f"run {run_id} has {pending} pending quarantine entries: decide them "
                f"(sanitize quarantine list --run {run_id}); the last decision approves"
            )
        failure = detection_failure(run.summary or {})
        if failure is not None:
            raise ApprovalRefused(f"run {run_id}: {failure}; its clean version stays provisional")
        approved = s.scalars(
            select(Version).where(Version.run_id == run_id, Version.kind == "clean", Version.status == "approved")
        ).first()
        if approved is not None:
            return approved.id
        version = ws.catalog.version(s, run.clean_version_id)
        if version.status != "provisional":
            raise InputError(f"clean version {version.id} of run {run_id} is {version.status}; it cannot be approved")
        version.status = "approved"
        ws.catalog.audit(s, reviewer, "version.approve", version.id, run=run_id, note=note, by="approve")
        return version.id
