"""One sample's page: its provenance, every detector's score on its class, its kept neighbours, and
the previous and next sample in the quarantine's order."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from sanitize.web import charts
from sanitize.web.data import RunData, check_sample_id
from sanitize.web.queries import QuarantineQuery, adjacent_entries, decisions_of, entry_of, run_row
from sanitize.web.views import RunsDep, SamplesDep, WorkspaceDep, render

router = APIRouter()


def detector_rows(data: RunData, i: int) -> list[dict[str, Any]]:
    """Per detector, row ``i``'s score, threshold and flag, with its class's histogram marking it."""
    label = int(data.labels[i])
    in_class = data.labels == label
    rows = []
    for name, d in data.detectors.items():
        thr = float(d.thresholds[i])
        rows.append(
            {
                "name": name,
                "voter": name in data.voters,
                "score": float(d.scores[i]),
                "threshold": thr if math.isfinite(thr) else None,
                "flagged": bool(d.flags[i]),
                "rank": int(d.ranks[i]),
                "note": d.notes.get(label, ""),
                "chart": charts.histogram(
                    d.scores[in_class],
                    flagged=d.flags[in_class],
                    threshold=thr,
                    marker=float(d.scores[i]),
                    title=f"{name}, class {label}",
                ),
            }
        )
    return rows


@router.get("/runs/{run_id}/samples/{sample_id}", response_class=HTMLResponse)
def sample_view(
    request: Request, run_id: str, sample_id: str, ws: WorkspaceDep, runs: RunsDep, samples: SamplesDep
) -> HTMLResponse:
    """The sample's page; the URL's quarantine parameters (not its page) set what previous and next are."""
    check_sample_id(sample_id)
    data = runs.get(run_id)
    i = data.row(sample_id)
    entry = entry_of(ws, run_id, sample_id)
    q = QuarantineQuery.from_params(request.query_params, paged=False).check_run(data.classes, list(data.detectors))
    prev_id, next_id = adjacent_entries(ws, run_id, entry, q) if entry is not None else (None, None)
    version = samples.version(data.dataset, data.version_id) if data.version_id else None
    provenance = version.provenance(sample_id) if version is not None else None
    label = int(data.labels[i])
    return render(
        request,
        "sample.html",
        {
            "run": run_row(ws, run_id),
            "sample_id": sample_id,
            "label": label,
            "class_size": data.class_sizes[label],
            "suspicion": float(data.suspicion[i]),
            "quarantined": bool(data.quarantined[i]),
            "entry": entry,
            "decisions": decisions_of(ws, entry.id) if entry is not None else [],
            "provenance": provenance,
            "detectors": detector_rows(data, i),
            "neighbours": data.neighbours(sample_id, k=8),
            "classes": data.classes,
            "prev_id": prev_id,
            "next_id": next_id,
            "order_params": {k: v for k, v in q.params().items() if k not in ("page", "per_page")},
        },
    )
