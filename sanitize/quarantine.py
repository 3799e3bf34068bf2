"""Reading the quarantine: entries of a run with each sample's provenance and why it was flagged.

Entries are written by the cleaning run (:func:`sanitize.pipeline.quarantine_stage`); nothing is
ever deleted, a decision only changes an entry's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from sanitize.catalog import QuarantineEntry
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


def confirmed_poisons(ws: Workspace, dataset: str, *, other_than: str | None = None) -> dict[str, str]:
    """Content hash -> why it stays out, for every sample confirmed as poison in a run of ``dataset``.

    Confirmed poisons stay out for good: a later version that holds the same pixels (same content
    hash, whatever its source, place or label) excludes them too. ``other_than`` leaves out one
    run's own entries. The reason names the first run that confirmed the content.
    """
    query = (
        select(QuarantineEntry.content_sha256, QuarantineEntry.run_id, QuarantineEntry.sample_id)
        .where(QuarantineEntry.dataset == dataset, QuarantineEntry.status == "confirmed")
        .order_by(QuarantineEntry.created_at, QuarantineEntry.id)
    )
    if other_than is not None:
        query = query.where(QuarantineEntry.run_id != other_than)
    found: dict[str, str] = {}
    with ws.catalog.session() as s:
        for sha, run_id, sample_id in s.execute(query):
            found.setdefault(sha, f"confirmed poison in run {run_id} (sample {sample_id})")
    return found
