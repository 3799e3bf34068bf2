"""Lineage: the chain from a dataset version back to the sources it was ingested from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sanitize.catalog import AuditRecord, Ingest, Run
from sanitize.store import atomic_write_json
from sanitize.workspace import Workspace


@dataclass(frozen=True)
class LineageStep:
    """One version in the chain, with the run that made it and, for ingested versions, its sources."""

    version: str
    kind: str
    status: str
    created_at: str
    run_id: str | None = None
    run_config: dict[str, Any] | None = None
    excluded: int | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)


def lineage(ws: Workspace, version_id: str) -> list[LineageStep]:
    """From ``version_id`` back through its parents to the ingests of its sources."""
    steps: list[LineageStep] = []
    seen: set[str] = set()
    current: str | None = version_id
    with ws.catalog.session() as s:
        while current is not None and current not in seen:
            seen.add(current)
            v = ws.catalog.version(s, current)
            run = s.get(Run, v.run_id) if v.run_id else None
            manifest = ws.store.manifest(v.dataset, v.id)
            sources = []
            if v.kind == "ingested":
                for f in manifest.files:
                    ing = s.scalars(select(Ingest).where(Ingest.file == f)).first()
                    if ing is not None:
                        sources.append(
                            {
                                "source": ing.source,
                                "uri": ing.uri,
                                "format": ing.format,
                                "samples": ing.n_samples,
                                "ingest_id": ing.id,
                                "ingested_at": ing.created_at.isoformat(),
                            }
                        )
            excluded = (manifest.extra or {}).get("excluded_sample_ids")
            trained = s.scalars(
                select(AuditRecord)
                .where(AuditRecord.action == "model.train", AuditRecord.subject == v.id)
                .order_by(AuditRecord.id)
            ).all()
            steps.append(
                LineageStep(
                    version=v.id,
                    kind=v.kind,
                    status=v.status,
                    created_at=v.created_at.isoformat(),
                    run_id=v.run_id,
                    run_config=run.config if run else None,
                    excluded=len(excluded) if excluded is not None else None,
                    sources=sources,
                    models=[{"by": a.actor, "at": a.at.isoformat(), **(a.detail or {})} for a in trained],
                )
            )
            current = v.parent_id
    return steps


def record_training(
    ws: Workspace, version_id: str, model: Path, *, job: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Record that ``job`` trained ``model`` on ``version_id``: an audit record in the catalog (shown by
    ``sanitize lineage``) and ``<model>.lineage.json`` beside the model; return what was recorded.

    The record names the version, its status, parent, run and the run's configuration, so the model
    can be traced back to the sources with :func:`lineage`.
    """
    with ws.catalog.session() as s:
        v = ws.catalog.version(s, version_id)
        run = s.get(Run, v.run_id) if v.run_id else None
        record = {
            "model": str(Path(model).resolve()),
            "dataset": v.dataset,
            "version": v.id,
            "version_status": v.status,
            "parent_version": v.parent_id,
            "run_id": v.run_id,
            "run_config": run.config if run else None,
            "trained_at": datetime.now(UTC).isoformat(),
            **(details or {}),
        }
        ws.catalog.audit(s, job, "model.train", v.id, **{k: val for k, val in record.items() if k != "run_config"})
    atomic_write_json(Path(model).with_name(Path(model).name + ".lineage.json"), record)
    return record
