"""Reviewers' decisions on a run's quarantined samples, by form post (redirects back) or by script
(answers JSON). Every decision goes through :func:`sanitize.review.decide`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from sanitize.review import ACTIONS, decide
from sanitize.web.guards import reviewer_session
from sanitize.web.queries import whole_number
from sanitize.web.routes.browse import counts_of, selection
from sanitize.web.views import WorkspaceDep, local_path, wants_html

router = APIRouter()

MAX_NOTE = 2000
MAX_SELECTION = 1000


@router.post("/runs/{run_id}/decide")
def decide_view(
    request: Request,
    run_id: str,
    ws: WorkspaceDep,
    action: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    sample_id: Annotated[list[str] | None, Form()] = None,
    note: Annotated[str, Form()] = "",
    new_label: Annotated[str, Form()] = "",
    next_url: Annotated[str, Form(alias="next")] = "",
) -> Response:
    session = reviewer_session(request, csrf_token)
    if action not in ACTIONS:
        raise ValueError(f"unknown decision {action!r}; choose one of {', '.join(ACTIONS)}")
    ids, _ = selection(sample_id, note)  # the note goes on as given
    label = whole_number(new_label, "new_label", 0) if action == "relabel" else None
    if action == "relabel" and label is None:
        raise ValueError("relabel needs the class to relabel to")
    # Whether the class is one of the dataset's is decide's to say: one check for every caller.
    results = decide(ws, run_id, ids, action, reviewer=session.reviewer, note=note.strip() or None, new_label=label)
    if wants_html(request):
        return RedirectResponse(local_path(next_url, f"/runs/{run_id}/quarantine"), status_code=303)
    return JSONResponse(
        {
            "reviewer": session.reviewer,
            "results": [{"sample_id": r.sample_id, "status": r.status, "changed": r.changed} for r in results],
            # The header's counts as they stand now, so the page shows them without a reload.
            **counts_of(ws, run_id),
        }
    )
