"""Sending a kept sample to the quarantine by hand, and undoing a decision: audited, replayable by
``verify``, refused once the run's clean version is approved."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from web_support import copy_of, demo_run, quarantined

from sanitize.catalog import AuditRecord, Decision, QuarantineEntry, Version
from sanitize.errors import InputError, NotFoundError
from sanitize.quarantine import BY_HAND, ConflictError, ReviewClosedError, quarantine_by_hand
from sanitize.review import decide, undo_decision
from sanitize.verify import verify
from sanitize.workspace import Workspace


@pytest.fixture
def run(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> tuple[Workspace, str, list[str]]:
    """A private copy of the demo run and the ids of samples its detectors kept."""
    home, run_id = demo_run(tmp_path_factory)
    ws = copy_of(home, tmp_path / "home")
    verdict = pq.read_table(ws.store.run_dir(run_id) / "verdict.parquet", columns=["sample_id", "quarantine"])
    kept = [s for s, q in zip(*verdict.to_pydict().values(), strict=True) if not q]
    return ws, run_id, kept


def audit_of(ws: Workspace, subject: str) -> list[tuple[str, str, dict | None]]:
    with ws.catalog.session() as s:
        return [
            (a.actor, a.action, a.detail)
            for a in s.scalars(select(AuditRecord).where(AuditRecord.subject == subject).order_by(AuditRecord.id))
        ]


def test_a_kept_sample_sent_by_hand_is_pending_with_its_decision_and_audit(
    run: tuple[Workspace, str, list[str]],
) -> None:
    ws, run_id, kept = run
    before = set(quarantined(ws, run_id))
    out = quarantine_by_hand(ws, run_id, kept[:2], reviewer="ana", note="same patch as the flagged ones")
    assert [(r.sample_id, r.status, r.entered) for r in out] == [(kept[0], "pending", True), (kept[1], "pending", True)]
    entries = quarantined(ws, run_id)
    assert set(entries) == before | set(kept[:2])
    e = entries[kept[0]]
    assert (e.status, e.detectors, e.reason) == (
        "pending",
        BY_HAND,
        "sent to the quarantine by hand by ana: same patch as the flagged ones",
    )
    with ws.catalog.session() as s:
        decisions = s.execute(
            select(Decision.action, Decision.reviewer, Decision.note).where(Decision.quarantine_id == e.id)
        ).all()
    assert decisions == [(BY_HAND, "ana", "same patch as the flagged ones")]
    assert audit_of(ws, f"{run_id}/{kept[0]}") == [
        ("ana", "quarantine.by_hand", {"note": "same patch as the flagged ones"})
    ]
    # Sending it again changes nothing; verify accepts an entry the verdict did not flag when sent by hand.
    again = quarantine_by_hand(ws, run_id, [kept[0]], reviewer="ben")
    assert [(r.status, r.entered) for r in again] == [("pending", False)]
    report = verify(ws)
    assert report.ok, report.problems


def test_bad_input_is_named(run: tuple[Workspace, str, list[str]]) -> None:
    ws, run_id, kept = run
    with pytest.raises(NotFoundError, match="sample 0123456789abcdef0123 is not a training sample of run"):
        quarantine_by_hand(ws, run_id, [kept[0], "0123456789abcdef0123"], reviewer="ana")
    assert kept[0] not in quarantined(ws, run_id), "all or nothing"
    with pytest.raises(NotFoundError, match="unknown run 'nope'"):
        quarantine_by_hand(ws, "nope", kept[:1], reviewer="ana")
    with pytest.raises(ValueError, match="reviewer"):
        quarantine_by_hand(ws, run_id, kept[:1], reviewer=" ")
    with pytest.raises(NotFoundError, match=f"sample {kept[0]} is not in the quarantine of run {run_id}"):
        undo_decision(ws, run_id, [kept[0]], reviewer="ana")
    flagged = next(s for s, e in quarantined(ws, run_id).items() if e.status == "pending")
    with pytest.raises(InputError, match="pending as the detectors flagged it: no decision to undo"):
        undo_decision(ws, run_id, [flagged], reviewer="ana")


def test_undo_takes_back_a_decision_and_a_by_hand_send_and_verify_replays_them(
    run: tuple[Workspace, str, list[str]],
) -> None:
    ws, run_id, kept = run
    flagged = sorted(s for s, e in quarantined(ws, run_id).items() if e.status == "pending")[:2]
    decide(ws, run_id, [flagged[0]], "relabel", reviewer="ana", new_label=3)
    decide(ws, run_id, [flagged[1]], "confirm", reviewer="ana")
    out = undo_decision(ws, run_id, flagged, reviewer="ben", note="too quick")
    assert [(r.sample_id, r.status) for r in out] == [(flagged[0], "pending"), (flagged[1], "pending")]
    entries = quarantined(ws, run_id)
    assert (entries[flagged[0]].status, entries[flagged[0]].new_label) == ("pending", None)
    assert audit_of(ws, f"{run_id}/{flagged[0]}")[-1] == (
        "ben",
        "quarantine.undo",
        {"note": "too quick", "before": "relabelled", "after": "pending"},
    )
    # Decided again after the undo: an ordinary decision.
    decide(ws, run_id, [flagged[0]], "release", reviewer="ben")

    quarantine_by_hand(ws, run_id, [kept[0]], reviewer="ana")
    assert [r.status for r in undo_decision(ws, run_id, [kept[0]], reviewer="ana")] == ["released"]
    assert [r.status for r in undo_decision(ws, run_id, [kept[0]], reviewer="ana")] == ["pending"]
    decide(ws, run_id, [kept[0]], "confirm", reviewer="ana")
    with pytest.raises(
        ConflictError, match=f"sample {kept[0]} is already in the quarantine of run {run_id} as confirmed"
    ):
        quarantine_by_hand(ws, run_id, [kept[0]], reviewer="ana")
    report = verify(ws)
    assert report.ok, report.problems

    # verify replays the decisions: an entry edited behind them is named.
    with ws.catalog.session() as s:
        e = s.scalars(select(QuarantineEntry).where(QuarantineEntry.sample_id == kept[0])).one()
        e.status = "released"
    problems = [(p.check, p.message, p.sample_id) for p in verify(ws).problems]
    assert ("decisions", "released but its decisions end in confirmed", kept[0]) in problems


def test_once_approved_nothing_is_sent_or_undone_and_the_by_hand_poison_stays_out(
    run: tuple[Workspace, str, list[str]],
) -> None:
    ws, run_id, kept = run
    quarantine_by_hand(ws, run_id, [kept[0]], reviewer="ana")
    decide(ws, run_id, list(quarantined(ws, run_id)), "confirm", reviewer="ana")
    with ws.catalog.session() as s:
        approved = s.scalars(select(Version).where(Version.run_id == run_id, Version.status == "approved")).one()
        vid, manifest = approved.id, approved.manifest
    assert kept[0] in ws.store.manifest(approved.dataset, vid).extra["excluded_sample_ids"], manifest
    with pytest.raises(ReviewClosedError, match=f"clean version {vid} is approved: its decisions are final"):
        undo_decision(ws, run_id, [kept[0]], reviewer="ana")
    with pytest.raises(ReviewClosedError, match="cannot send samples to the quarantine by hand"):
        quarantine_by_hand(ws, run_id, [kept[1]], reviewer="ana")
    assert quarantined(ws, run_id)[kept[0]].status == "confirmed"
    report = verify(ws)
    assert report.ok, report.problems
