"""A run's quarantine: filtered, sorted and paged in SQL (see :mod:`sanitize.web.queries`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from sanitize.errors import NotFoundError
from sanitize.web.queries import QuarantineQuery, quarantine_page, run_row
from sanitize.web.views import RunsDep, WorkspaceDep, render

router = APIRouter()


@router.get("/runs/{run_id}/quarantine", response_class=HTMLResponse)
def quarantine_view(request: Request, run_id: str, ws: WorkspaceDep, runs: RunsDep) -> HTMLResponse:
    """One page of the quarantine; the URL's parameters are :meth:`QuarantineQuery.from_params`'s."""
    data = runs.get(run_id)
    q = QuarantineQuery.from_params(request.query_params).check_run(data.classes, list(data.detectors))
    result = quarantine_page(ws, run_id, q)
    if q.page > result.pages:
        raise NotFoundError(f"page {q.page} is past the last page ({result.pages}) of this selection")
    return render(
        request,
        "quarantine.html",
        {
            "run": run_row(ws, run_id),
            "q": q,
            "result": result,
            "detectors": list(data.detectors),
            "classes": data.classes,
            "sample_params": {k: v for k, v in q.params().items() if k not in ("page", "per_page")},
        },
    )
