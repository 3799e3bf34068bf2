"""The quarantine: entering a run's flagged samples, and reading entries with each sample's
provenance and why it was flagged.

A run enters its verdict's flagged samples (:func:`enter_quarantine`); a reviewer may send any other
training sample of the run there by hand (:func:`quarantine_by_hand`) while the run's clean version
is not approved. Nothing is ever deleted, a decision (:mod:`sanitize.review`) only changes an
entry's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sanitize.catalog import Decision, QuarantineEntry, Run, Version
from sanitize.errors import InputError, InvariantError, NotFoundError, SanitizeError
from sanitize.runs import RunContext
from sanitize.workspace import Workspace

STATUSES = ("pending", "confirmed", "released", "relabelled")
BY_HAND = "by_hand"
"""The decision (and the entry's ``detectors``) of a sample a reviewer sent to the quarantine by hand."""
UNDO = "undo"
"""The decision that takes back an entry's latest decision (:func:`sanitize.review.undo_decision`)."""


class ConflictError(SanitizeError):
    """Another decision already settled the sample."""


class ReviewClosedError(SanitizeError):
    """The run's reviewed clean version is approved: its quarantine takes no more changes."""


def open_run(ws: Workspace, s: Session, run_id: str, doing: str) -> Run:
    """The run, when its quarantine may still change: completed, and no approved clean version.

    Once a version is approved, training jobs may have read it; changing the review behind it would
    make the record disagree with what they trained on, so the change is refused, naming the version.
    """
    run = ws.catalog.run(s, run_id)
    if run.status != "completed":
        raise InputError(f"run {run_id} is {run.status}, not completed: cannot {doing} on its quarantine")
    approved = approved_version_id(s, run_id)
    if approved is not None:
        raise ReviewClosedError(
            f"run {run_id}'s reviewed clean version {approved} is approved: its decisions are final, "
            f"cannot {doing} (start a new run to review the data again)"
        )
    return run


def approved_version_id(s: Session, run_id: str) -> str | None:
    """The run's approved clean version, or None while it has none."""
    return s.scalars(
        select(Version.id).where(Version.run_id == run_id, Version.kind == "clean", Version.status == "approved")
    ).first()


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
            s.scalar(select(func.count()).select_from(QuarantineEntry).where(QuarantineEntry.run_id == ctx.run_id)) or 0
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


@dataclass(frozen=True)
class ByHandResult:
    """What sending one sample to the quarantine by hand did: ``entered`` is False when the sample was
    already pending there (nothing changed)."""

    sample_id: str
    status: str
    entered: bool


def quarantine_by_hand(
    ws: Workspace, run_id: str, sample_ids: list[str], *, reviewer: str, note: str | None = None
) -> list[ByHandResult]:
    """Send training samples of ``run_id`` that its detectors kept to the run's quarantine, pending
    review, all or nothing.

    Each new entry is recorded as a :data:`BY_HAND` decision with ``reviewer`` and ``note`` and an
    audit record ``quarantine.by_hand``; from there it is decided like any flagged entry. A sample
    already pending is left as it is; one whose entry is already decided is refused (undo that
    decision first). Refused with :class:`ReviewClosedError` once the run's clean version is approved.
    """
    if not reviewer.strip():
        raise ValueError("sending a sample to the quarantine needs a reviewer name")
    ids = list(dict.fromkeys(sample_ids))
    if not ids:
        raise ValueError("choose at least one sample to send to the quarantine")
    with ws.catalog.session() as s:
        run = open_run(ws, s, run_id, "send samples to the quarantine by hand")
        existing = {
            e.sample_id: e
            for e in s.scalars(
                select(QuarantineEntry).where(QuarantineEntry.run_id == run_id, QuarantineEntry.sample_id.in_(ids))
            )
        }
        new = [sid for sid in ids if sid not in existing]
        rows = _training_rows(ws, run, new) if new else {}
        results = []
        for sid in ids:
            e = existing.get(sid)
            if e is not None:
                if e.status != "pending":
                    raise ConflictError(
                        f"sample {sid} is already in the quarantine of run {run_id} as {e.status}; "
                        "undo that decision to review it again"
                    )
                results.append(ByHandResult(sid, "pending", False))
                continue
            row = rows[sid]
            reason = f"sent to the quarantine by hand by {reviewer}" + (f": {note}" if note else "")
            entry = QuarantineEntry(
                run_id=run_id,
                dataset=run.dataset,
                status="pending",
                detectors=BY_HAND,
                reason=reason,
                **row,
            )
            s.add(entry)
            s.flush()
            s.add(Decision(quarantine_id=entry.id, action=BY_HAND, new_label=None, reviewer=reviewer, note=note))
            ws.catalog.audit(s, reviewer, f"quarantine.{BY_HAND}", f"{run_id}/{sid}", note=note)
            results.append(ByHandResult(sid, "pending", True))
    return results


def _training_rows(ws: Workspace, run: Run, sample_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per sample id, the entry's columns from the run's version and verdict; NotFoundError naming the
    first id that is not one of the run's training samples."""
    if run.version_id is None:
        raise InputError(f"run {run.id} has no dataset version")
    prov = ws.store.read_column_table(
        ws.store.manifest(run.dataset, run.version_id),
        ["sample_id", "content_sha256", "label", "source", "locator"],
        split="train",
    )
    wanted = pa.array(sample_ids, pa.string())
    prov = prov.filter(pc.is_in(prov.column("sample_id"), value_set=wanted))
    verdict_path = ws.store.run_dir(run.id) / "verdict.parquet"
    verdict = pq.read_table(verdict_path, columns=["sample_id", "suspicion_score"])
    verdict = verdict.filter(pc.is_in(verdict.column("sample_id"), value_set=wanted))
    score = dict(
        zip(verdict.column("sample_id").to_pylist(), verdict.column("suspicion_score").to_pylist(), strict=True)
    )
    out: dict[str, dict[str, Any]] = {}
    for r in prov.to_pylist():
        out[r["sample_id"]] = r
    for sid in sample_ids:
        if sid not in out or sid not in score:
            raise NotFoundError(f"sample {sid} is not a training sample of run {run.id}")
        out[sid]["suspicion_score"] = float(score[sid])
    return out
