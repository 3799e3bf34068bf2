"""Review decisions on quarantined samples: confirm as poison, release, or relabel, and undo.

A decision moves an entry out of ``pending`` once: repeating the same decision is a no-op, and a
different decision on an entry that is no longer pending is refused (never silently overwritten),
also when two reviewers decide at the same moment (the update only matches a pending row). Every
decision is stored with reviewer, time and note, and appended to the audit log. When a run's
quarantine has no pending entry left, its clean version is re-exported with the released samples
back in (relabelled ones under their new label) and marked ``approved``.

Until then a decision can be taken back (:func:`undo_decision`): the entry is pending again, and the
undo is itself a decision, stored and audited, so the record shows both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update

from sanitize.catalog import Decision, QuarantineEntry, Run, Version
from sanitize.errors import InputError, NotFoundError
from sanitize.export import export_clean_version
from sanitize.quarantine import BY_HAND, UNDO, ConflictError, open_run, pending_count
from sanitize.workspace import Workspace

ACTIONS = {"confirm": "confirmed", "release": "released", "relabel": "relabelled"}


@dataclass(frozen=True)
class DecisionResult:
    sample_id: str
    status: str
    changed: bool


def decide(
    ws: Workspace,
    run_id: str,
    sample_ids: list[str],
    action: str,
    *,
    reviewer: str,
    note: str | None = None,
    new_label: int | None = None,
) -> list[DecisionResult]:
    """Apply one decision to ``sample_ids`` of ``run_id``'s quarantine, all or nothing."""
    if action not in ACTIONS:
        raise ValueError(f"unknown decision {action!r}; choose one of {sorted(ACTIONS)}")
    if action == "relabel" and new_label is None:
        raise ValueError("relabel needs the new label")
    if action != "relabel" and new_label is not None:
        raise ValueError(f"{action} takes no label; use relabel")
    if not reviewer.strip():
        raise ValueError("a decision needs a reviewer name")
    status = ACTIONS[action]
    results = []
    with ws.catalog.session() as s:
        run = ws.catalog.run(s, run_id)
        if run.status != "completed":
            raise InputError(
                f"run {run_id} is {run.status}, not completed: only a completed run's quarantine takes decisions"
            )
        if new_label is not None:
            check_label(ws, run, new_label)
        for sid in sample_ids:
            entry = s.scalars(
                select(QuarantineEntry).where(QuarantineEntry.run_id == run_id, QuarantineEntry.sample_id == sid)
            ).first()
            if entry is None:
                raise NotFoundError(f"sample {sid} is not in the quarantine of run {run_id}")
            if entry.status == status and entry.new_label == new_label:
                results.append(DecisionResult(sid, status, False))
                continue
            # Compare-and-set: only a pending row changes, so a concurrent decision cannot be overwritten.
            done = s.execute(
                update(QuarantineEntry)
                .where(QuarantineEntry.id == entry.id, QuarantineEntry.status == "pending")
                .values(status=status, new_label=new_label, updated_at=datetime.now(UTC))
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                s.refresh(entry)
                raise ConflictError(
                    f"sample {sid} was already {entry.status}"
                    f"{f' (label {entry.new_label})' if entry.new_label is not None else ''}; "
                    f"refusing to {action} it"
                )
            s.add(Decision(quarantine_id=entry.id, action=action, new_label=new_label, reviewer=reviewer, note=note))
            ws.catalog.audit(s, reviewer, f"quarantine.{action}", f"{run_id}/{sid}", note=note, new_label=new_label)
            results.append(DecisionResult(sid, status, True))
    if any(r.changed for r in results):
        maybe_approve(ws, run_id)
    return results


def undo_decision(
    ws: Workspace, run_id: str, sample_ids: list[str], *, reviewer: str, note: str | None = None
) -> list[DecisionResult]:
    """Take back the latest decision on each of ``sample_ids`` of ``run_id``'s quarantine, all or nothing.

    A confirmed, released or relabelled entry is pending again (its new label dropped); a pending
    entry that a reviewer sent by hand (:func:`sanitize.quarantine.quarantine_by_hand`) is released,
    back into training (the entry stays: nothing is deleted). Each undo is a :data:`UNDO` decision
    with ``reviewer`` and ``note`` and an audit record ``quarantine.undo`` naming both statuses.
    Refused while the entry has nothing of this run's review to undo (pending as the detectors
    flagged it, or confirmed as poison in another run), and once the run's clean version is approved
    (:class:`sanitize.quarantine.ReviewClosedError`). Returns each entry's new status.
    """
    if not reviewer.strip():
        raise ValueError("an undo needs a reviewer name")
    ids = list(dict.fromkeys(sample_ids))
    if not ids:
        raise ValueError("choose at least one sample whose decision to undo")
    results = []
    with ws.catalog.session() as s:
        open_run(ws, s, run_id, "undo a decision")
        for sid in ids:
            entry = s.scalars(
                select(QuarantineEntry).where(QuarantineEntry.run_id == run_id, QuarantineEntry.sample_id == sid)
            ).first()
            if entry is None:
                raise NotFoundError(f"sample {sid} is not in the quarantine of run {run_id}: no decision to undo")
            history = s.scalars(
                select(Decision.action).where(Decision.quarantine_id == entry.id).order_by(Decision.id)
            ).all()
            by_hand = bool(history) and history[0] == BY_HAND
            if entry.status == "pending":
                if not by_hand:
                    raise InputError(f"sample {sid} is pending as the detectors flagged it: no decision to undo")
                status = "released"
            elif not history:
                raise InputError(
                    f"sample {sid} entered already {entry.status} ({entry.reason}); "
                    f"that decision was taken in another run and cannot be undone in {run_id}"
                )
            else:
                status = "pending"
            before = entry.status
            # Compare-and-set on the status read above: a decision taken meanwhile is not undone unseen.
            done = s.execute(
                update(QuarantineEntry)
                .where(QuarantineEntry.id == entry.id, QuarantineEntry.status == before)
                .values(status=status, new_label=None, updated_at=datetime.now(UTC))
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise ConflictError(f"sample {sid} changed while undoing its decision; look again and retry")
            s.add(Decision(quarantine_id=entry.id, action=UNDO, new_label=None, reviewer=reviewer, note=note))
            ws.catalog.audit(
                s, reviewer, f"quarantine.{UNDO}", f"{run_id}/{sid}", note=note, before=before, after=status
            )
            results.append(DecisionResult(sid, status, True))
    maybe_approve(ws, run_id)
    return results


def check_label(ws: Workspace, run: Run, label: int) -> None:
    """Refuse a relabelling to a class the run's dataset version does not have (the one check, for the
    command line, the web page and the library alike: an approved version with label 99 in a
    10-class dataset would crash every training job that reads it)."""
    if run.version_id is None:
        raise InputError(f"run {run.id} has no dataset version to take its classes from")
    classes = ws.store.manifest(run.dataset, run.version_id).classes
    if label not in classes:
        raise InputError(
            f"class {label} is not a class of this dataset ({run.dataset!r}: classes {', '.join(map(str, classes))})"
        )


def maybe_approve(ws: Workspace, run_id: str) -> str | None:
    """When no entry of the run is pending, export and approve its reviewed clean version."""
    pending = pending_count(ws, run_id)
    with ws.catalog.session() as s:
        run = ws.catalog.run(s, run_id)
        if pending or run.status != "completed" or run.version_id is None:
            return None
        rows = s.scalars(select(QuarantineEntry).where(QuarantineEntry.run_id == run_id)).all()
        excluded = {e.sample_id for e in rows if e.status == "confirmed"}
        relabel = {e.sample_id: int(e.new_label) for e in rows if e.status == "relabelled" and e.new_label is not None}
        dataset, version, config = run.dataset, run.version_id, run.config
    vid = export_clean_version(ws, dataset, version, run_id, excluded, config, relabel=relabel, status="approved")
    with ws.catalog.session() as s:
        v = s.get(Version, vid)
        if v is None:
            raise NotFoundError(f"approved version {vid} was not recorded")
        v.status = "approved"
        ws.catalog.audit(
            s, "review", "version.approve", vid, run=run_id, confirmed=len(excluded), relabelled=len(relabel)
        )
    return vid
