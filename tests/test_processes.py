"""Telling a run whose process is gone from one still working (sanitize.processes)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from sanitize.catalog import AuditRecord, Run
from sanitize.processes import STALE_AFTER, host_name, mark_interrupted_runs, process_start
from sanitize.workspace import Workspace


def _running(ws: Workspace, run_id: str, **who: object) -> None:
    with ws.catalog.session() as s:
        s.add(Run(id=run_id, dataset="d", status="running", config={}, config_fingerprint="f", **who))


def test_only_runs_whose_process_is_gone_are_marked_interrupted(workspace: Workspace) -> None:
    now = datetime.now(UTC)
    here, me = host_name(), os.getpid()
    _running(workspace, "alive-here", host=here, pid=me, process_start=process_start(me), heartbeat_at=now)
    _running(workspace, "gone-here", host=here, pid=2**22 + 17, process_start="1", heartbeat_at=now)
    _running(workspace, "pid-reused", host=here, pid=me, process_start="0", heartbeat_at=now)
    _running(workspace, "beating-elsewhere", host="node-7", pid=me, heartbeat_at=now - STALE_AFTER / 2)
    _running(workspace, "silent-elsewhere", host="node-7", pid=me, heartbeat_at=now - STALE_AFTER - timedelta(1))
    _running(workspace, "older-release", host=None, pid=None)

    assert sorted(mark_interrupted_runs(workspace.catalog)) == ["gone-here", "pid-reused", "silent-elsewhere"]

    with workspace.catalog.session() as s:
        runs = {r.id: r for r in s.scalars(select(Run))}
        audited = set(s.scalars(select(AuditRecord.subject).where(AuditRecord.action == "run.interrupted")))
    assert {i for i, r in runs.items() if r.status == "running"} == {"alive-here", "beating-elsewhere", "older-release"}
    assert runs["gone-here"].error == f"interrupted: its process {2**22 + 17} on {here} is gone"
    assert (runs["silent-elsewhere"].error or "").startswith("interrupted: no heartbeat from node-7 since ")
    assert audited == {"gone-here", "pid-reused", "silent-elsewhere"}
    assert mark_interrupted_runs(workspace.catalog) == []  # once


def test_a_fresh_workspace_marks_them_before_anything_reads_the_catalog(workspace: Workspace) -> None:
    _running(workspace, "gone", host=host_name(), pid=2**22 + 17, process_start="1")
    with Workspace(workspace.settings).catalog.session() as s:
        assert s.get(Run, "gone").status == "failed"  # type: ignore[union-attr]
