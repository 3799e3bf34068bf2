"""The runs page (every run with its quarantine's counts) and one run's page."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from sanitize.web.queries import list_runs, run_row
from sanitize.web.views import WorkspaceDep, render
from sanitize.workspace import Workspace

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, ws: WorkspaceDep) -> HTMLResponse:
    return render(request, "runs.html", {"runs": list_runs(ws)})


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, ws: WorkspaceDep) -> HTMLResponse:
    run = run_row(ws, run_id)
    live = live_stage(ws, run.id) if run.status == "running" else None
    return render(request, "run.html", {"run": run, "live": live})


def live_stage(ws: Workspace, run_id: str) -> dict[str, Any] | None:
    """A running run's stage, since when, and where it is (its ``context.json``), or None."""
    path = ws.store.run_dir(run_id) / "context.json"
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not obj.get("stage"):
        return None
    since = obj.get("stage_started_at")
    return {
        "stage": str(obj["stage"]),
        "since": datetime.fromisoformat(since) if since else None,
        "progress": str(obj.get("stage_progress") or ""),
    }
