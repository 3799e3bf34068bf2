"""Telling a run whose process is gone from one still working.

A run records the host, process id and process start time of the process that runs it, and that
process refreshes the run's heartbeat while it lives (:mod:`sanitize.runs`). Every command that opens
the catalog through a :class:`~sanitize.workspace.Workspace` first marks ``failed`` (interrupted) the
runs left ``running`` by a process that is gone:

- on this host, when no process has the recorded id, or the one that has it started at another time
  (the id was reused);
- on another host, when the heartbeat is older than :data:`STALE_AFTER`: ten missed beats.

A run recorded by a release that kept neither (no host, no heartbeat) cannot be judged and is left.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from sanitize.catalog import Catalog, Run, Version

HEARTBEAT_S = 60.0
"""Seconds between a running run's heartbeats."""

STALE_AFTER = timedelta(seconds=10 * HEARTBEAT_S)
"""A run on another host whose heartbeat is older than this is taken for interrupted."""


def host_name() -> str:
    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as the kernel counts it (``/proc/PID/stat``, field 22), or None
    where ``/proc`` does not tell (not Linux, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    return stat[stat.rindex(")") + 2 :].split()[19]


def _alive_here(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    return started is None or process_start(pid) in (None, started)


def interruption(run: Run, *, now: datetime, here: str) -> str | None:
    """Why a ``running`` run is taken for interrupted, or None while its process may still work."""
    if run.host == here and run.pid is not None:
        if _alive_here(run.pid, run.process_start):
            return None
        return f"interrupted: its process {run.pid} on {run.host} is gone"
    if run.heartbeat_at is not None and now - run.heartbeat_at > STALE_AFTER:
        return f"interrupted: no heartbeat from {run.host} since {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC"
    return None


def mark_interrupted_runs(catalog: Catalog) -> list[str]:
    """Mark every ``running`` run whose process is gone ``failed`` (interrupted), with an audit record;
    a clean version it exported before it died is marked failed too. Returns their ids."""
    now, here = datetime.now(UTC), host_name()
    marked = []
    with catalog.session() as s:
        for run in s.scalars(select(Run).where(Run.status == "running")):
            why = interruption(run, now=now, here=here)
            if why is None:
                continue
            run.status, run.error = "failed", why
            run.finished_at = now
            for version in s.scalars(select(Version).where(Version.run_id == run.id, Version.kind == "clean")):
                version.status = "failed"
            catalog.audit(s, "catalog", "run.interrupted", run.id, error=run.error)
            marked.append(run.id)
    return marked
