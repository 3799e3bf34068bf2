"""The quarantine: entering a run's flagged samples, and reading entries with each sample's
provenance and why it was flagged.

A run enters its verdict's flagged samples (:func:`enter_quarantine`); nothing is ever deleted, a
decision (:mod:`sanitize.review`) only changes an entry's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import func, select

from sanitize.catalog import QuarantineEntry
from sanitize.errors import InvariantError
from sanitize.runs import RunContext
from sanitize.workspace import Workspace

STATUSES = ("pending", "confirmed", "released", "relabelled")


@dataclass(frozen=True)
class QuarantineRow:
    run_id: str
    sample_id: str
    label: int
    source: str
    locator: str
    content_sha256: str
    suspicion_score: float
    detectors: str
    status: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_run(ws: Workspace, run: str | None, dataset: str | None = None) -> str:
    """A run id, or the latest completed run (of ``dataset``) for None or ``latest``."""
    with ws.catalog.session() as s:
        if run in (None, "latest"):
            return ws.catalog.latest_run(s, dataset).id
        return ws.catalog.run(s, run).id


def list_quarantine(
    ws: Workspace,
    run_id: str,
    *,
    status: str | None = None,
    label: int | None = None,
    source: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[QuarantineRow]:
    """Entries of ``run_id``, most suspicious first, optionally filtered."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; choose one of {STATUSES}")
    query = select(QuarantineEntry).where(QuarantineEntry.run_id == run_id)
    if status:
        query = query.where(QuarantineEntry.status == status)
    if label is not None:
        query = query.where(QuarantineEntry.label == label)
    if source:
        query = query.where(QuarantineEntry.source == source)
    query = query.order_by(QuarantineEntry.suspicion_score.desc(), QuarantineEntry.id).offset(offset)
    if limit:
        query = query.limit(limit)
    with ws.catalog.session() as s:
        ws.catalog.run(s, run_id)
        return [
            QuarantineRow(
                e.run_id,
                e.sample_id,
                e.label,
                e.source,
                e.locator,
                e.content_sha256,
                e.suspicion_score,
                e.detectors,
                e.status,
                e.reason,
            )
            for e in s.scalars(query)
        ]


def status_counts(ws: Workspace, run_id: str) -> dict[str, int]:
    with ws.catalog.session() as s:
        rows = s.execute(
            select(QuarantineEntry.status, func.count())
            .where(QuarantineEntry.run_id == run_id)
            .group_by(QuarantineEntry.status)
        ).all()
    return {status: int(n) for status, n in rows}


@dataclass(frozen=True)
class QuarantineSummary:
    """A run's training samples: ingested = kept + quarantined."""

    ingested: int
    kept: int
    quarantined: int


def enter_quarantine(ws: Workspace, ctx: RunContext, verdict_path: Path) -> QuarantineSummary:
    """Enter the verdict's flagged samples into the quarantine (status pending) and check kept +
    quarantined = ingested.

    Samples whose content was confirmed as poison in an earlier run of the dataset enter it too,
    already ``confirmed`` (flagged or not this time), with the run that confirmed them as reason.
    """
    columns = ["sample_id", "suspicion_score", "quarantine", "flagged_by", "reason"]
    verdict = pq.read_table(verdict_path, columns=columns)
    prov = ws.store.read_column_table(
        ctx.manifest(ws), ["sample_id", "content_sha256", "label", "source", "locator"], split="train"
    )
    ingested = prov.num_rows
    if verdict.num_rows != ingested:
        raise InvariantError(
            f"run {ctx.run_id}: the verdict covers {verdict.num_rows} samples but the version "
            f"has {ingested} training samples"
        )
    by_id = {sid: i for i, sid in enumerate(prov.column("sample_id").to_pylist())}
    p = prov.to_pydict()
    with ws.catalog.session() as s:
        confirmed = ws.catalog.confirmed_poisons(s, ctx.dataset, other_than=ctx.run_id)
    entries = []
    carried = 0
    for row in verdict.to_pylist():
        i = by_id[row["sample_id"]]
        earlier = confirmed.get(p["content_sha256"][i])
        if not row["quarantine"] and earlier is None:
            continue
        carried += earlier is not None
        entries.append(
            QuarantineEntry(
                run_id=ctx.run_id,
                dataset=ctx.dataset,
                sample_id=row["sample_id"],
                content_sha256=p["content_sha256"][i],
                label=p["label"][i],
                source=p["source"][i],
                locator=p["locator"][i],
                suspicion_score=float(row["suspicion_score"]),
                detectors=row["flagged_by"] if row["quarantine"] else "review",
                reason="; ".join(r for r in (earlier, row["reason"] if row["quarantine"] else "") if r),
                status="pending" if earlier is None else "confirmed",
            )
        )
    with ws.catalog.session() as s:
        s.add_all(entries)
        s.flush()
        quarantined = (
            s.scalar(select(func.count()).select_from(QuarantineEntry).where(QuarantineEntry.run_id == ctx.run_id))
            or 0
        )
        kept = ingested - len(entries)
        if kept + quarantined != ingested:
            raise InvariantError(f"run {ctx.run_id}: kept {kept} + quarantined {quarantined} != ingested {ingested}")
        ws.catalog.audit(
            s,
            "pipeline",
            "run.quarantine",
            ctx.run_id,
            quarantined=quarantined,
            kept=kept,
            ingested=ingested,
            confirmed_earlier=carried,
        )
    return QuarantineSummary(ingested, kept, quarantined)


def quarantined_ids(ws: Workspace, run_id: str, verdict_path: Path) -> set[str]:
    """A run's quarantine: what its verdict flagged and what earlier reviews confirmed as poison."""
    t = pq.read_table(verdict_path, columns=["sample_id", "quarantine"])
    with ws.catalog.session() as s:
        entered = s.scalars(select(QuarantineEntry.sample_id).where(QuarantineEntry.run_id == run_id)).all()
    return set(t.filter(t.column("quarantine")).column("sample_id").to_pylist()) | set(entered)


def pending_count(ws: Workspace, run_id: str) -> int:
    """How many of a run's entries still wait for a reviewer's decision."""
    with ws.catalog.session() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(QuarantineEntry)
                .where(QuarantineEntry.run_id == run_id, QuarantineEntry.status == "pending")
            )
            or 0
        )
