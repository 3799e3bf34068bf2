"""Scheduled cleaning: a dataset's schedule, and what a scheduled run does before it cleans.

A schedule (cron or interval, and the run configuration) is kept in the catalog. A scheduled run
first reads every source of the dataset again from where it was ingested
(:func:`refresh_sources`); when neither the dataset's version nor the configuration changed since
the last completed run with that configuration, it records a skip (:func:`record_skip`) instead of
cleaning the same data again. A scheduled run that fails before a cleaning run starts is recorded
as a failed run all the same (:func:`record_failure`).

Prefect (``flows/``) decides *when*; everything here runs, and is tested, without it.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from sanitize.catalog import Dataset, Ingest, Run, Schedule, Source
from sanitize.config import DATASET_PATTERN, DEFAULT_DATASET, RunConfig
from sanitize.demo import ingest_demo
from sanitize.errors import InputError, NotFoundError
from sanitize.ingest.core import ingest_path
from sanitize.ingest.readers import FORMATS
from sanitize.runs import new_run_id
from sanitize.workspace import Workspace

# --- cron -----------------------------------------------------------------------------------------
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, lowest, highest, names for the values from ``lowest`` on)
_CRON_FIELDS: list[tuple[str, int, int, list[str]]] = [
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day of month", 1, 31, []),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
]


def _cron_value(text: str, field: str, low: int, high: int, names: list[str]) -> int:
    if text.lower() in names:
        return low + names.index(text.lower())
    if not text.isdigit():
        raise ValueError(f"{field} {text!r} is not a number{' or a name' if names else ''}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{field} {value} is outside {low}-{high}")
    return value


def validate_cron(expression: str) -> str:
    """Check a five-field cron expression (minute hour day-of-month month day-of-week) or a macro
    such as ``@daily``; return it, or raise ``ValueError`` saying which field is wrong."""
    expr = " ".join(expression.split())
    if expr.lower() in _CRON_MACROS:
        return expr
    parts = expr.split(" ")
    if len(parts) != 5:
        raise ValueError(
            f"cron {expression!r} has {len(parts)} fields; expected 5 (minute hour day-of-month month day-of-week)"
        )
    for part, (field, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
        for item in part.split(","):
            m = re.fullmatch(r"(\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(\d+))?", item)
            if m is None:
                raise ValueError(f"cron {expression!r}: {field} {item!r} is not valid")
            span, step = m.group(1), m.group(2)
            if step is not None and int(step) < 1:
                raise ValueError(f"cron {expression!r}: {field} step must be at least 1")
            if span != "*":
                bounds = [_cron_value(v, field, low, high, names) for v in span.split("-")]
                if len(bounds) == 2 and bounds[0] > bounds[1]:
                    raise ValueError(f"cron {expression!r}: {field} range {span!r} runs backwards")
    return expr


# --- schedules ------------------------------------------------------------------------------------
class ScheduleSpec(BaseModel):
    """When a dataset is cleaned (a cron expression or an interval) and with which configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(min_length=1, pattern=DATASET_PATTERN)
    cron: str | None = None
    interval_seconds: int | None = Field(default=None, ge=60, le=366 * 86400)
    config: RunConfig

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleSpec:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("a schedule needs exactly one of a cron expression and an interval")
        if self.cron is not None:
            object.__setattr__(self, "cron", validate_cron(self.cron))
        if self.config.dataset != self.dataset:
            raise ValueError(f"the configuration cleans {self.config.dataset!r}, not {self.dataset!r}")
        if self.config.version is not None:
            raise ValueError("a scheduled run cleans the dataset's current version; the configuration may not pin one")
        return self

    def describe(self) -> str:
        return f"cron {self.cron!r} (UTC)" if self.cron else f"every {self.interval_seconds} s"


def save_schedule(ws: Workspace, spec: ScheduleSpec, *, actor: str = "cli") -> None:
    """Store (or replace) the dataset's schedule. The dataset must exist, except the built-in demo."""
    with ws.catalog.session() as s:
        if spec.dataset != DEFAULT_DATASET:
            ws.catalog.dataset(s, spec.dataset)
        row = s.get(Schedule, spec.dataset)
        config = spec.config.model_dump(mode="json")
        if row is None:
            s.add(
                Schedule(
                    dataset=spec.dataset,
                    cron=spec.cron,
                    interval_seconds=spec.interval_seconds,
                    config=config,
                    active=True,
                )
            )
        else:
            row.cron, row.interval_seconds, row.config = spec.cron, spec.interval_seconds, config
            row.active, row.updated_at = True, datetime.now(UTC)
        ws.catalog.audit(s, actor, "schedule.set", spec.dataset, when=spec.describe(), config=config)


def list_schedules(ws: Workspace) -> list[ScheduleSpec]:
    """The active schedules, by dataset name."""
    with ws.catalog.session() as s:
        rows = s.scalars(select(Schedule).where(Schedule.active.is_(True)).order_by(Schedule.dataset)).all()
        return [
            ScheduleSpec(
                dataset=r.dataset,
                cron=r.cron,
                interval_seconds=r.interval_seconds,
                config=RunConfig.model_validate(r.config),
            )
            for r in rows
        ]


def remove_schedule(ws: Workspace, dataset: str, *, actor: str = "cli") -> None:
    """Stop scheduling ``dataset`` (the definition stays in the catalog, inactive)."""
    with ws.catalog.session() as s:
        row = s.get(Schedule, dataset)
        if row is None or not row.active:
            raise NotFoundError(f"dataset {dataset!r} has no schedule")
        row.active, row.updated_at = False, datetime.now(UTC)
        ws.catalog.audit(s, actor, "schedule.remove", dataset)


# --- reading the sources again --------------------------------------------------------------------
@dataclass(frozen=True)
class SourceRefresh:
    """What reading one source again found."""

    source: str
    uri: str
    format: str
    outcome: Literal["new data", "unchanged", "not re-readable"]


@dataclass(frozen=True)
class Refresh:
    """The dataset's version before and after its sources were read again."""

    dataset: str
    version_before: str | None
    version: str
    sources: list[SourceRefresh]

    @property
    def changed(self) -> bool:
        return self.version != self.version_before

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


_DEMO_URI = "sklearn.datasets.load_digits"


def refresh_sources(ws: Workspace, dataset: str, *, actor: str = "schedule") -> Refresh:
    """Ingest every source of ``dataset`` again from its recorded URI and format.

    A source that holds what it held last time stores nothing (same version); new or changed data
    makes a new version. Sources ingested from memory (``fmt="arrays"``) cannot be read again and
    keep their last ingest. A source that cannot be read any more raises :class:`InputError` naming it.
    """
    addresses: dict[str, tuple[str, str, dict[str, Any]]] = {}
    with ws.catalog.session() as s:
        ds = s.get(Dataset, dataset)
        if ds is None and dataset != DEFAULT_DATASET:
            ds = ws.catalog.dataset(s, dataset)  # raises, naming the known datasets
        before = ds.current_version if ds is not None else None
        for a in s.scalars(select(Source).where(Source.dataset == dataset)):
            addresses[a.name] = (a.uri, a.format, dict(a.options or {}))
        # Sources ingested before their address was kept: their last ingest's URI and format.
        legacy: dict[str, tuple[str, str, dict[str, Any]]] = {
            i.source: (i.uri, i.format, {})
            for i in s.scalars(select(Ingest).where(Ingest.dataset == dataset).order_by(Ingest.created_at))
        }
        for name, address in legacy.items():
            addresses.setdefault(name, address)
    if not addresses and dataset == DEFAULT_DATASET:
        addresses["sklearn-digits"] = (_DEMO_URI, "builtin", {})

    results: list[SourceRefresh] = []
    for name, (uri, fmt, options) in sorted(addresses.items()):
        if fmt == "builtin" and uri == _DEMO_URI:
            report = ingest_demo(ws, dataset)
        elif fmt in FORMATS:
            try:
                report = ingest_path(
                    ws.catalog,
                    ws.store,
                    dataset=dataset,
                    path=uri,
                    source=name,
                    format=fmt,
                    image_column=options.get("image_column"),
                    label_column=options.get("label_column"),
                    split=options.get("split", "train"),
                    actor=actor,
                )
            # Gone, unreadable or malformed: the source's fault, named. Other OS errors (a network
            # share that hiccups) pass unchanged, so the scheduled flow may try again.
            except (InputError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
                raise InputError(
                    f"source {name!r} of dataset {dataset!r} could not be read again from {uri}: {exc}"
                ) from exc
        else:
            results.append(SourceRefresh(name, uri, fmt, "not re-readable"))
            continue
        results.append(SourceRefresh(name, uri, fmt, "new data" if report.stored else "unchanged"))
    with ws.catalog.session() as s:
        after = ws.catalog.dataset(s, dataset).current_version
    assert after is not None
    return Refresh(dataset, before, after, results)


# --- skip or fail, as a run record ----------------------------------------------------------------
def ingested_version_of(run: Run) -> str | None:
    """The ingested version a run cleaned (a red-team run's ``version_id`` is its poisoned copy)."""
    return (run.summary or {}).get("ingested_version") or run.version_id


def previous_equivalent_run(ws: Workspace, config: RunConfig, version: str) -> str | None:
    """The last completed run of the dataset with this configuration, if it cleaned ``version``."""
    with ws.catalog.session() as s:
        last = s.scalars(
            select(Run)
            .where(
                Run.dataset == config.dataset,
                Run.status == "completed",
                Run.config_fingerprint == config.fingerprint(),
            )
            .order_by(Run.started_at.desc())
            .limit(1)
        ).first()
        return last.id if last is not None and ingested_version_of(last) == version else None


def _record(
    ws: Workspace,
    config: RunConfig,
    *,
    status: str,
    action: str,
    version: str | None,
    summary: dict[str, Any] | None = None,
    error: str | None = None,
    detail: dict[str, Any],
) -> str:
    run_id = new_run_id()
    now = datetime.now(UTC)
    with ws.catalog.session() as s:
        s.add(
            Run(
                id=run_id,
                dataset=config.dataset,
                version_id=version,
                status=status,
                config=config.model_dump(mode="json"),
                config_fingerprint=config.fingerprint(),
                summary=summary,
                error=error,
                started_at=now,
                finished_at=now,
            )
        )
        ws.catalog.audit(s, "schedule", action, run_id, **detail)
    return run_id


def record_skip(ws: Workspace, config: RunConfig, version: str, previous_run: str) -> str:
    """Record a scheduled run that found nothing new to clean; return its run id."""
    reason = f"dataset version {version} and configuration {config.fingerprint()} unchanged since run {previous_run}"
    summary = {"skipped": True, "reason": reason, "same_as": previous_run, "ingested_version": version}
    return _record(
        ws,
        config,
        status="skipped",
        action="run.skip",
        version=version,
        summary=summary,
        detail={"same_as": previous_run},
    )


def record_failure(ws: Workspace, config: RunConfig, error: BaseException) -> str:
    """Record a scheduled run that failed before a cleaning run started (e.g. an unreadable source)."""
    with ws.catalog.session() as s:
        ds = s.get(Dataset, config.dataset)
        version = ds.current_version if ds is not None else None
    message = f"{type(error).__name__}: {error}"
    return _record(
        ws,
        config,
        status="failed",
        action="run.fail",
        version=version,
        error=message,
        detail={"error": message, "traceback": "".join(traceback.format_exception(error))[-4000:]},
    )
