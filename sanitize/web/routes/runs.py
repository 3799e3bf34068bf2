"""The runs page (every run with its quarantine's counts) and one run's page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from sanitize.web.queries import list_runs, run_row
from sanitize.web.views import WorkspaceDep, render

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, ws: WorkspaceDep) -> HTMLResponse:
    return render(request, "runs.html", {"runs": list_runs(ws)})


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, ws: WorkspaceDep) -> HTMLResponse:
    return render(request, "run.html", {"run": run_row(ws, run_id)})
