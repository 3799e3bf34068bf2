"""A run's pictures: each voter's scores per class, the quarantine per source, and the features'
first two principal components coloured by status, class or source (``?colour=``), all inline SVG.
A rectangle drawn on the projection opens its samples on the all-samples page (review.js)."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from sanitize.web import charts
from sanitize.web.data import RunData
from sanitize.web.index import NAMES, RunIndex, run_index
from sanitize.web.queries import run_row, status_by_source
from sanitize.web.views import RunsDep, WorkspaceDep, class_long, render

router = APIRouter()

# At most this many kept samples are drawn (a fixed random subset): enough to see the classes'
# shapes, and the page stays small. Every quarantined sample is drawn.
MAX_KEPT_DRAWN = 3000
COLOURINGS = ("status", "class", "source")


def class_histograms(data: RunData, voters: list[str]) -> list[Markup]:
    """Per class and voter, the histogram of the class's scores with its threshold."""
    per_class = []
    for c in sorted(data.class_sizes):
        in_class = data.labels == c
        for name in voters:
            d = data.detectors[name]
            thr = d.thresholds[in_class]
            per_class.append(
                charts.histogram(
                    d.scores[in_class],
                    flagged=d.flags[in_class],
                    threshold=float(thr[0]) if len(thr) else None,
                    title=f"class {class_long(c, data.class_names)}: {name} "
                    f"({int(d.flags[in_class].sum())} of {int(in_class.sum())} flagged)",
                    width=300,
                )
            )
    return per_class


def projection_chart(index: RunIndex, data: RunData, colour: str = "status") -> Markup:
    """The features' first two principal components, each sample coloured by its quarantine status,
    its class or its source."""
    if colour not in COLOURINGS:
        raise ValueError(f"unknown colouring {colour!r}; choose one of {', '.join(COLOURINGS)}")
    overlay = index.statuses.current()
    status = NAMES[overlay.codes]
    points = data.projection()
    kept = np.flatnonzero(overlay.codes == 0)
    mask = np.ones(len(points), dtype=bool)
    if len(kept) > MAX_KEPT_DRAWN:
        mask[np.setdiff1d(kept, np.random.default_rng(0).choice(kept, MAX_KEPT_DRAWN, replace=False))] = False
    if colour == "status":
        category, colours = status, None
    elif colour == "class":
        names = [class_long(c, data.class_names) for c in sorted(data.class_sizes)]
        lookup = np.empty(max(data.class_sizes, default=0) + 1, dtype=object)
        for c in data.class_sizes:
            lookup[c] = class_long(c, data.class_names)
        category = lookup[data.labels]
        colours = charts.category_colours(names)
    else:
        category = np.array(index.source_names, dtype=object)[index.source_codes]
        colours = charts.category_colours(index.source_names)
    return charts.scatter(
        points[mask],
        category[mask].tolist(),
        title=f"features, first two principal components, by {colour}",
        colours=colours,
        chart_id="projection-chart",
    )


@router.get("/runs/{run_id}/pictures", response_class=HTMLResponse)
def pictures_view(
    request: Request, run_id: str, ws: WorkspaceDep, runs: RunsDep, colour: str = "status"
) -> HTMLResponse:
    data = runs.get(run_id)
    run = run_row(ws, run_id)
    voters = [v for v in data.voters if v in data.detectors] or list(data.detectors)[:1]
    per_class = class_histograms(data, voters)
    by_source = status_by_source(ws, run_id)
    per_source = run.summary.get("per_source") or {}
    names = sorted(set(per_source) | set(by_source))
    source_rows = [(n, int((per_source.get(n) or {}).get("samples", 0)), by_source.get(n, {})) for n in names]
    return render(
        request,
        "pictures.html",
        {
            "run": run,
            "voters": voters,
            "per_class": per_class,
            "sources_chart": charts.stacked_bars(source_rows, title="quarantined samples per source, by status"),
            "projection": projection_chart(run_index(ws, data), data, colour),
            "colour": colour,
            "colourings": COLOURINGS,
        },
    )
