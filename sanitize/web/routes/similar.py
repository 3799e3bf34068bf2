"""Find more like this: a sample's (or a selection's) nearest training samples in feature space or
in input space, as a grid from which each can be sent to the quarantine."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from sanitize.web.data import check_sample_id
from sanitize.web.index import SUSPICION, run_index
from sanitize.web.queries import run_row, whole_number
from sanitize.web.similar import SPACES, similar
from sanitize.web.views import RunsDep, WorkspaceDep, render

router = APIRouter()

MAX_QUERY = 100
MAX_K = 500


@router.get("/runs/{run_id}/similar", response_class=HTMLResponse)
def similar_view(
    request: Request,
    run_id: str,
    ws: WorkspaceDep,
    runs: RunsDep,
    sample_id: Annotated[list[str] | None, Query()] = None,
    space: str = "features",
    k: str = "48",
) -> HTMLResponse:
    ids = list(dict.fromkeys(sample_id or []))
    if not ids:
        raise ValueError("choose a sample (sample_id) to find more like it")
    if len(ids) > MAX_QUERY:
        raise ValueError(f"at most {MAX_QUERY} samples to find more like, not {len(ids)}")
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
    count = whole_number(k, "k", 1, MAX_K) or 48
    data = runs.get(run_id)
    rows = [data.row(check_sample_id(sid)) for sid in ids]
    index = run_index(ws, data)
    overlay = index.statuses.current()
    found = similar(ws, data, rows, space, count)
    return render(
        request,
        "similar.html",
        {
            "run": run_row(ws, run_id),
            "queries": [index.row(i, SUSPICION, overlay) for i in rows],
            "neighbours": [(index.row(n.row, SUSPICION, overlay), n.distance) for n in found],
            "space": space,
            "k": count,
            "ids": ids,
            "counts": overlay.counts,
        },
    )
