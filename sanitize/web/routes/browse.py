"""Every training sample of a run (not only the quarantine), and what a reviewer does from there:
send samples to the quarantine by hand, or undo a decision (:mod:`sanitize.web.index` pages them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from sanitize.quarantine import quarantine_by_hand
from sanitize.review import undo_decision
from sanitize.web.data import check_sample_id
from sanitize.web.guards import reviewer_session
from sanitize.web.index import SampleQuery, run_index
from sanitize.web.queries import run_row
from sanitize.web.views import RunsDep, WorkspaceDep, local_path, render, wants_html
from sanitize.workspace import Workspace

router = APIRouter()

MAX_NOTE = 2000
MAX_SELECTION = 1000


@router.get("/runs/{run_id}/samples", response_class=HTMLResponse)
def samples_view(request: Request, run_id: str, ws: WorkspaceDep, runs: RunsDep) -> HTMLResponse:
    """One page of the run's training samples; the URL's parameters are :meth:`SampleQuery.from_params`'s."""
    data = runs.get(run_id)
    index = run_index(ws, data)
    q = SampleQuery.from_params(request.query_params)
    result = index.page(q)
    return render(
        request,
        "samples.html",
        {
            "run": run_row(ws, run_id),
            "q": q,
            "result": result,
            "detectors": list(data.detectors),
            "classes": sorted(data.class_sizes),
        },
    )


def selection(sample_id: list[str] | None, note: str) -> tuple[list[str], str | None]:
    """The form's sample ids (each checked, at most ``MAX_SELECTION``) and its note (None when blank)."""
    ids = list(dict.fromkeys(sample_id or []))
    if not ids:
        raise ValueError("choose at least one sample")
    if len(ids) > MAX_SELECTION:
        raise ValueError(f"at most {MAX_SELECTION} samples at once, not {len(ids)}")
    for sid in ids:
        check_sample_id(sid)
    if len(note) > MAX_NOTE:
        raise ValueError(f"the note is {len(note)} characters; keep it under {MAX_NOTE}")
    return ids, note.strip() or None


def counts_of(ws: Workspace, run_id: str) -> dict[str, object]:
    """The run's quarantine counts as the pages' headers show them, for a script or the page's DOM."""
    row = run_row(ws, run_id)
    return {"counts": row.counts, "quarantined": row.quarantined, "approved_version": row.approved_version}


@router.post("/runs/{run_id}/by-hand")
def by_hand_view(
    request: Request,
    run_id: str,
    ws: WorkspaceDep,
    csrf_token: Annotated[str, Form()] = "",
    sample_id: Annotated[list[str] | None, Form()] = None,
    note: Annotated[str, Form()] = "",
    next_url: Annotated[str, Form(alias="next")] = "",
) -> Response:
    """Send the chosen samples to the quarantine by hand (:func:`sanitize.quarantine.quarantine_by_hand`)."""
    session = reviewer_session(request, csrf_token)
    ids, text = selection(sample_id, note)
    results = quarantine_by_hand(ws, run_id, ids, reviewer=session.reviewer, note=text)
    changed = [(r.sample_id, r.status, r.entered) for r in results]
    return _answer(request, ws, run_id, session.reviewer, next_url, changed)


@router.post("/runs/{run_id}/undo")
def undo_view(
    request: Request,
    run_id: str,
    ws: WorkspaceDep,
    csrf_token: Annotated[str, Form()] = "",
    sample_id: Annotated[list[str] | None, Form()] = None,
    note: Annotated[str, Form()] = "",
    next_url: Annotated[str, Form(alias="next")] = "",
) -> Response:
    """Take back the latest decision on the chosen samples (:func:`sanitize.review.undo_decision`)."""
    session = reviewer_session(request, csrf_token)
    ids, text = selection(sample_id, note)
    results = undo_decision(ws, run_id, ids, reviewer=session.reviewer, note=text)
    changed = [(r.sample_id, r.status, r.changed) for r in results]
    return _answer(request, ws, run_id, session.reviewer, next_url, changed)


def _answer(
    request: Request, ws: Workspace, run_id: str, reviewer: str, next_url: str, results: list[tuple[str, str, bool]]
) -> Response:
    """A by-hand send's or an undo's answer: back to the page for a form, else JSON with the new counts."""
    if wants_html(request):
        return RedirectResponse(local_path(next_url, f"/runs/{run_id}/samples"), status_code=303)
    rows = [{"sample_id": sid, "status": status, "changed": changed} for sid, status, changed in results]
    return JSONResponse({"reviewer": reviewer, "results": rows, **counts_of(ws, run_id)})
