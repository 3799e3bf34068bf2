"""The runs' checks: verdict, quarantine rows and version agree; every state change has its decision
and audit record (see :mod:`sanitize.verify`)."""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sanitize.catalog import Decision, QuarantineEntry, Run, Version
from sanitize.quarantine import BY_HAND, UNDO
from sanitize.verify.files import Columns, StoreChecker
from sanitize.verify.report import VerifyReport

STATUS_OF_ACTION = {"confirm": "confirmed", "release": "released", "relabel": "relabelled"}
_CARRIED = re.compile(r"confirmed poison in run (\S+) \(sample (\S+)\)")


def check_run(
    checker: StoreChecker,
    run: Run,
    entries: list[QuarantineEntry],
    decisions: dict[int, list[Decision]],
    audited: set[tuple[str, str]],
    confirmed: dict[tuple[str, str], str],
    clean_versions: list[Version],
    entered: dict[str, dict[str, Any]],
) -> None:
    """Check one completed run; ``entered`` is each run's ``run.quarantine`` audit detail."""
    rep = checker.report
    if run.version_id is None:
        rep.problem("runs", "a completed run without a dataset version", run=run.id)
        return
    cols = checker.version_columns(run.dataset, run.version_id)
    if cols is None:
        rep.problem("runs", f"its version {run.version_id} cannot be read", run=run.id, version=run.version_id)
        return
    train = {sid: i for i, sid in enumerate(cols.ids["train"])}
    verdict_path = checker.ws.store.run_dir(run.id) / "verdict.parquet"
    verdict_file = str(verdict_path.relative_to(checker.ws.store.home))
    flagged: set[str] = set()
    try:
        verdict = pq.read_table(verdict_path, columns=["sample_id", "quarantine"])
    except (OSError, pa.ArrowException) as exc:
        rep.problem("runs", f"its verdict cannot be read: {exc}", run=run.id, file=verdict_file)
    else:
        ids = verdict.column("sample_id").to_pylist()
        if sorted(ids) != sorted(train):
            rep.problem(
                "runs",
                f"kept + quarantined != ingested: the verdict covers {len(ids)} samples, the version's "
                f"train split has {len(train)}" + ("" if len(ids) != len(train) else " (other samples)"),
                run=run.id,
                version=run.version_id,
                file=verdict_file,
            )
        flagged = {sid for sid, q in zip(ids, verdict.column("quarantine").to_pylist(), strict=True) if q}
    have = {e.sample_id for e in entries}
    for sid in sorted(flagged - have):
        rep.problem(
            "runs",
            "the verdict flags it but the quarantine has no entry for it",
            run=run.id,
            file=verdict_file,
            sample_id=sid,
        )
    for e in entries:
        check_entry(rep, run, e, train, cols, flagged, decisions.get(e.id, []), audited, confirmed)
    # The counts the quarantine stage recorded (its audit record, chained; the run's summary is not
    # the place: a red-team run's detection figures overwrite its "quarantined" with the verdict's).
    recorded = entered.get(run.id)
    # Entries a reviewer sent by hand came after the quarantine stage counted.
    from_stage = [e for e in entries if not _by_hand(decisions.get(e.id, []))]
    if recorded is None:
        rep.warn("runs", "no run.quarantine audit record to compare the quarantine's size with", run=run.id)
    else:
        counted = (recorded.get("ingested"), recorded.get("quarantined"), recorded.get("kept"))
        if counted != (len(train), len(from_stage), len(train) - len(from_stage)):
            rep.problem(
                "runs",
                f"the quarantine stage recorded ingested {counted[0]}, quarantined {counted[1]}, kept {counted[2]}; "
                f"now {len(train)} ingested and {len(from_stage)} quarantine entries it entered",
                run=run.id,
            )
    poisons = {e.sample_id for e in entries if e.status == "confirmed"}
    for v in clean_versions:
        manifest = checker.manifest(v)
        if v.status != "approved" or manifest is None:
            continue
        let_in = poisons - set((manifest.extra or {}).get("excluded_sample_ids", []))
        for sid in sorted(let_in):
            rep.problem(
                "runs",
                "a confirmed poison of the run is in its approved version",
                run=run.id,
                version=v.id,
                sample_id=sid,
            )


def check_entry(
    rep: VerifyReport,
    run: Run,
    e: QuarantineEntry,
    train: dict[str, int],
    cols: Columns,
    flagged: set[str],
    decisions: list[Decision],
    audited: set[tuple[str, str]],
    confirmed: dict[tuple[str, str], str],
) -> None:
    where: dict[str, Any] = {"run": run.id, "sample_id": e.sample_id}
    i = train.get(e.sample_id)
    if i is None:
        rep.problem(
            "runs",
            f"a quarantine entry for a sample that is not in version {run.version_id}'s train split",
            **where,
        )
    else:
        if e.content_sha256 != cols.shas["train"][i]:
            rep.problem(
                "runs",
                f"the entry's content_sha256 {e.content_sha256[:16]}... is not its sample's "
                f"{cols.shas['train'][i][:16]}...",
                **where,
            )
        if e.label != cols.labels["train"][i]:
            rep.problem("runs", f"the entry's label {e.label} is not its sample's {cols.labels['train'][i]}", **where)
    carried = _CARRIED.search(e.reason or "")
    carried_ok = (
        carried is not None
        and carried.group(1) != run.id
        and confirmed.get((carried.group(1), carried.group(2))) == e.content_sha256
    )
    by_hand = _by_hand(decisions)
    if e.sample_id not in flagged and not by_hand and not (e.status == "confirmed" and carried_ok and not decisions):
        rep.problem("runs", "an entry the verdict did not flag and no other run confirmed as poison", **where)
    if by_hand or any(d.action == UNDO for d in decisions):
        _check_replay(rep, run, e, decisions, audited, by_hand, where)
        return
    if e.status == "pending":
        if decisions:
            rep.problem(
                "decisions", f"pending, yet decided ({decisions[-1].action} by {decisions[-1].reviewer})", **where
            )
        return
    if e.status not in STATUS_OF_ACTION.values():
        rep.problem("decisions", f"unknown status {e.status!r}", **where)
        return
    if not decisions:
        # Only a poison confirmed in another run enters already confirmed, without a decision here.
        if not (e.status == "confirmed" and carried_ok):
            rep.problem("decisions", f"{e.status} without a decision", **where)
        return
    last = decisions[-1]
    labelled_right = (e.status == "relabelled") == (e.new_label is not None) and last.new_label == e.new_label
    if STATUS_OF_ACTION.get(last.action) != e.status or not labelled_right:
        rep.problem(
            "decisions",
            f"{e.status}{f' (label {e.new_label})' if e.new_label is not None else ''} but the decision was "
            f"{last.action}{f' (label {last.new_label})' if last.new_label is not None else ''}",
            **where,
        )
    subject = f"{run.id}/{e.sample_id}"
    for d in decisions:
        if (f"quarantine.{d.action}", subject) not in audited:
            rep.problem("decisions", f"the decision to {d.action} (by {d.reviewer}) has no audit record", **where)


def _by_hand(decisions: list[Decision]) -> bool:
    return bool(decisions) and decisions[0].action == BY_HAND


def _check_replay(
    rep: VerifyReport,
    run: Run,
    e: QuarantineEntry,
    decisions: list[Decision],
    audited: set[tuple[str, str]],
    by_hand: bool,
    where: dict[str, Any],
) -> None:
    """An entry sent by hand or with an undo: its decisions, replayed in order from how it entered,
    must each be allowed where they stand and end in the entry's status and label."""
    status, label = ("kept" if by_hand else "pending"), None
    for k, d in enumerate(decisions):
        if d.action == BY_HAND and k == 0:
            status, label = "pending", None
        elif d.action in STATUS_OF_ACTION and status == "pending":
            status, label = STATUS_OF_ACTION[d.action], d.new_label
        elif d.action == UNDO and status != "pending":
            status, label = "pending", None
        elif d.action == UNDO and by_hand:
            status, label = "released", None
        else:
            rep.problem("decisions", f"a decision to {d.action} (by {d.reviewer}) on an entry {status}", **where)
            return
    if (status, label) != (e.status, e.new_label):
        rep.problem(
            "decisions",
            f"{e.status}{f' (label {e.new_label})' if e.new_label is not None else ''} but its decisions "
            f"end in {status}{f' (label {label})' if label is not None else ''}",
            **where,
        )
    subject = f"{run.id}/{e.sample_id}"
    for d in decisions:
        if (f"quarantine.{d.action}", subject) not in audited:
            rep.problem("decisions", f"the decision to {d.action} (by {d.reviewer}) has no audit record", **where)
