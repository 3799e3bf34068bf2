"""The suspected trigger as a picture: for each class the verdict judged poisoned (its quarantined
samples against the rest of the class), or for any group the all-samples page selects, the group's
mean, its difference from the rest of its class, and where it is constant while the class varies."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from sanitize.web.data import _LRU, RunData, SampleStore
from sanitize.web.index import RunIndex, SampleQuery, run_index
from sanitize.web.queries import run_row
from sanitize.web.similar import PICTURES, GroupContrast, contrast, largest_difference, picture
from sanitize.web.views import RunsDep, SamplesDep, WorkspaceDep, class_long, class_names, render
from sanitize.workspace import Workspace

router = APIRouter()


@dataclass(frozen=True)
class Group:
    title: str
    query: SampleQuery
    contrast: GroupContrast | None
    problem: str | None

    @property
    def params(self) -> dict[str, str]:
        return self.query.group_params()


def group_key(index: RunIndex, q: SampleQuery) -> str:
    """A group's cache key: its parameters, and the audit head when it selects by status (which changes)."""
    params = sorted(q.group_params().items())
    head = index.statuses.current().head if q.uses_status else None
    return hashlib.sha256(repr((params, head)).encode()).hexdigest()


def group_contrast(
    ws: Workspace, data: RunData, index: RunIndex, samples: SampleStore, q: SampleQuery
) -> GroupContrast:
    """The group's contrast with the rest of its classes, kept for the page and its three pictures."""
    cache: _LRU = data.memo("contrasts", lambda: _LRU(64, lambda _: 1))
    key = group_key(index, q)
    found = cache.get(key)
    if found is None:
        found = contrast(ws, data, samples, index.rows_of(q))
        cache.put(key, found)
    return found


def group_query(request: Request, index: RunIndex) -> SampleQuery | None:
    """The group the URL selects, or None when it selects none (then: each class judged poisoned)."""
    params = {k: v for k, v in request.query_params.items() if k != "kind"}
    q = SampleQuery.from_params(params)
    return index.check(q) if q.group_params() else None


@router.get("/runs/{run_id}/trigger", response_class=HTMLResponse)
def trigger_view(request: Request, run_id: str, ws: WorkspaceDep, runs: RunsDep, samples: SamplesDep) -> HTMLResponse:
    data = runs.get(run_id)
    index = run_index(ws, data)
    chosen = group_query(request, index)
    run = run_row(ws, run_id)
    names = class_names(ws, run.dataset, run.version_id)
    if chosen is not None:
        queries = [("the selected samples", chosen)]
    else:
        poisoned = sorted({int(c) for c in data.labels[data.quarantined]})
        queries = [
            (
                f"class {class_long(c, names)}: the verdict's quarantine against the rest of the class",
                SampleQuery(label=c, verdict="quarantine"),
            )
            for c in poisoned
        ]
    groups = []
    for title, q in queries:
        try:
            groups.append(Group(title, q, group_contrast(ws, data, index, samples, q), None))
        except ValueError as exc:
            groups.append(Group(title, q, None, str(exc)))
    return render(
        request,
        "trigger.html",
        {
            "run": run,
            "class_names": names,
            "groups": groups,
            "selected": chosen is not None,
            "pictures": PICTURES,
            "largest_difference": largest_difference,
        },
    )


@router.get("/runs/{run_id}/trigger.png")
def trigger_png(request: Request, run_id: str, ws: WorkspaceDep, runs: RunsDep, samples: SamplesDep) -> Response:
    kind = request.query_params.get("kind", "difference")
    if kind not in PICTURES:
        raise ValueError(f"unknown picture {kind!r}; choose one of {', '.join(PICTURES)}")
    data = runs.get(run_id)
    index = run_index(ws, data)
    q = group_query(request, index)
    if q is None:
        raise ValueError("choose the group to picture (for example label=3&verdict=quarantine)")
    pngs: _LRU = data.memo("trigger_pngs", lambda: _LRU(32 << 20, len))
    key = (group_key(index, q), kind)
    png = pngs.get(key)
    if png is None:
        png = picture(group_contrast(ws, data, index, samples, q), kind)
        pngs.put(key, png)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, no-cache"})
