"""The review web app: server-rendered pages over the catalog and the store, decisions by reviewers.

Pages are read-only for everyone who can reach the server (it listens on loopback by default);
deciding needs a session started with a reviewer token, and every mutating form carries the
session's CSRF token. Decisions go through :func:`sanitize.review.decide`, which records the
reviewer, time and note, appends to the audit log and refuses conflicting decisions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import numpy as np
from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError
from starlette.templating import Jinja2Templates

from sanitize.catalog import QUARANTINE_REVIEW_INDEX
from sanitize.errors import NotFoundError, SanitizeError
from sanitize.quarantine import STATUSES
from sanitize.review import ACTIONS, ConflictError, decide
from sanitize.web import auth, charts
from sanitize.web.data import RunCache, SampleStore, check_sample_id
from sanitize.web.queries import (
    QuarantineQuery,
    adjacent_entries,
    decisions_of,
    entry_of,
    list_runs,
    quarantine_page,
    run_row,
    status_by_source,
    statuses_of,
)
from sanitize.workspace import Workspace

HERE = Path(__file__).parent
SESSION_COOKIE = "sanitize_session"
MAX_NOTE = 2000
MAX_SELECTION = 1000
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class WebError(SanitizeError):
    """A request the page refuses, with the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v: "n/a" if v is None else (f"{v:.3g}" if math.isfinite(v) else str(v))
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{v:.1%}"
    env.filters["qs"] = lambda params: urlencode(params)
    env.filters["when"] = lambda t: "" if t is None else f"{t:%Y-%m-%d %H:%M:%S} UTC"
    env.globals["STATUSES"] = STATUSES
    return env


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _local_path(target: str | None, default: str) -> str:
    """``target`` when it is a path on this site (never another host, never a scheme), else ``default``."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def _int_param(value: str | None, name: str) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value[:40]!r}") from None


def _int_or(value: str | None, name: str, default: int) -> int:
    given = _int_param(value, name)
    return default if given is None else given


def _ensure_review_index(ws: Workspace) -> None:
    """Add the review page's index to a catalog made before it existed (idempotent)."""
    try:
        QUARANTINE_REVIEW_INDEX.create(ws.catalog.engine, checkfirst=True)
    except DBAPIError:
        # Another server made it between the check and the create; anything else shows on first use.
        if not inspect(ws.catalog.engine).has_index("quarantine", "ix_quarantine_review"):
            raise


def create_app(ws: Workspace | None = None) -> FastAPI:
    """The review app over ``ws`` (default: the workspace of ``SANITIZE_HOME``)."""
    ws = ws or Workspace()
    _ensure_review_index(ws)
    app = FastAPI(title="sanitize review", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(env=_environment())
    runs_cache = RunCache(ws)
    samples = SampleStore(ws)
    app.state.workspace, app.state.runs, app.state.samples = ws, runs_cache, samples
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def session_of(request: Request) -> auth.SessionInfo | None:
        return auth.session_for(ws.catalog, request.cookies.get(SESSION_COOKIE))

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        query = request.url.query
        here = request.url.path + (f"?{query}" if query else "")
        context = {"session": session_of(request), "path": request.url.path, "here_url": here, **context}
        return templates.TemplateResponse(request, name, context, status_code=status)

    def same_origin(request: Request) -> None:
        # SameSite=Strict keeps the cookie off cross-site requests; these headers refuse them outright.
        origin = request.headers.get("origin")
        if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise WebError(403, f"refused a cross-site request from {origin[:100]}")
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise WebError(403, "refused a cross-site request")

    def reviewer_session(request: Request, csrf_token: str) -> auth.SessionInfo:
        same_origin(request)
        session = session_of(request)
        if session is None:
            raise WebError(401, "log in with a reviewer token to decide (the page is read-only without one)")
        if not session.csrf_ok(csrf_token):
            raise WebError(403, "missing or wrong CSRF token: reload the page and try again")
        return session

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def error_response(request: Request, status: int, message: str) -> Response:
        if _wants_html(request):
            return render(request, "error.html", {"status": status, "message": message}, status)
        return PlainTextResponse(message, status_code=status)

    @app.exception_handler(WebError)
    async def web_error(request: Request, exc: WebError) -> Response:
        return error_response(request, exc.status, str(exc))

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        return error_response(request, 404, str(exc))

    @app.exception_handler(ConflictError)
    async def conflict(request: Request, exc: ConflictError) -> Response:
        return error_response(request, 409, f"conflict: {exc}")

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> Response:
        return error_response(request, 400, str(exc))

    @app.exception_handler(SanitizeError)
    async def sanitize_error(request: Request, exc: SanitizeError) -> Response:
        return error_response(request, 400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()
        )
        return error_response(request, 400, f"bad request: {problems}")

    # --- pages ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def runs_page(request: Request) -> HTMLResponse:
        return render(request, "runs.html", {"runs": list_runs(ws)})

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> HTMLResponse:
        return render(request, "run.html", {"run": run_row(ws, run_id)})

    @app.get("/runs/{run_id}/quarantine", response_class=HTMLResponse)
    def quarantine_view(
        request: Request,
        run_id: str,
        status: str | None = None,
        label: str | None = None,
        source: str | None = None,
        detector: str | None = None,
        sort: str = "score_desc",
        group: str = "class",
        page: str | None = None,
        per_page: str | None = None,
    ) -> HTMLResponse:
        data = runs_cache.get(run_id)
        q = QuarantineQuery(
            status=status or None,
            label=_int_param(label, "label"),
            source=source or None,
            detector=detector or None,
            sort=sort,
            group=group,
            page=_int_or(page, "page", 1),
            per_page=_int_or(per_page, "per_page", QuarantineQuery.per_page),
        )
        if q.detector is not None and q.detector not in data.detectors:
            raise ValueError(f"unknown detector {q.detector!r}; this run ran {', '.join(data.detectors)}")
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

    @app.get("/runs/{run_id}/samples/{sample_id}", response_class=HTMLResponse)
    def sample_view(
        request: Request,
        run_id: str,
        sample_id: str,
        status: str | None = None,
        label: str | None = None,
        source: str | None = None,
        detector: str | None = None,
        sort: str = "score_desc",
        group: str = "class",
    ) -> HTMLResponse:
        check_sample_id(sample_id)
        data = runs_cache.get(run_id)
        i = data.row(sample_id)
        entry = entry_of(ws, run_id, sample_id)
        q = QuarantineQuery(
            status=status or None,
            label=_int_param(label, "label"),
            source=source or None,
            detector=detector or None,
            sort=sort,
            group=group,
        )
        prev_id, next_id = adjacent_entries(ws, run_id, entry, q) if entry is not None else (None, None)
        version = samples.version(data.dataset, data.version_id) if data.version_id else None
        provenance = version.provenance(sample_id) if version is not None else None
        label_i = int(data.labels[i])
        in_class = data.labels == label_i
        detectors = []
        for name, d in data.detectors.items():
            thr = float(d.thresholds[i])
            detectors.append(
                {
                    "name": name,
                    "voter": name in data.voters,
                    "score": float(d.scores[i]),
                    "threshold": thr if math.isfinite(thr) else None,
                    "flagged": bool(d.flags[i]),
                    "rank": int(d.ranks[i]),
                    "note": d.notes.get(label_i, ""),
                    "chart": charts.histogram(
                        d.scores[in_class],
                        flagged=d.flags[in_class],
                        threshold=thr,
                        marker=float(d.scores[i]),
                        title=f"{name}, class {label_i}",
                    ),
                }
            )
        neighbours = data.neighbours(sample_id, k=8)
        return render(
            request,
            "sample.html",
            {
                "run": run_row(ws, run_id),
                "sample_id": sample_id,
                "label": label_i,
                "class_size": data.class_sizes[label_i],
                "suspicion": float(data.suspicion[i]),
                "quarantined": bool(data.quarantined[i]),
                "entry": entry,
                "decisions": decisions_of(ws, entry.id) if entry is not None else [],
                "provenance": provenance,
                "detectors": detectors,
                "neighbours": neighbours,
                "classes": data.classes,
                "prev_id": prev_id,
                "next_id": next_id,
                "order_params": {k: v for k, v in q.params().items() if k not in ("page", "per_page")},
            },
        )

    @app.get("/runs/{run_id}/pictures", response_class=HTMLResponse)
    def pictures_view(request: Request, run_id: str) -> HTMLResponse:
        data = runs_cache.get(run_id)
        run = run_row(ws, run_id)
        voters = [v for v in data.voters if v in data.detectors] or list(data.detectors)[:1]
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
                        title=f"class {c}: {name} ({int(d.flags[in_class].sum())} of {int(in_class.sum())} flagged)",
                        width=300,
                    )
                )
        by_source = status_by_source(ws, run_id)
        per_source = run.summary.get("per_source") or {}
        names = sorted(set(per_source) | set(by_source))
        source_rows = [(n, int((per_source.get(n) or {}).get("samples", 0)), by_source.get(n, {})) for n in names]
        statuses = statuses_of(ws, run_id)
        category = np.array([statuses.get(sid, "kept") for sid in data.sample_ids], dtype=object)
        points = data.projection()
        # At most 3,000 kept samples are drawn (a fixed random subset): enough to see the classes'
        # shapes, and the page stays small. Every quarantined sample is drawn.
        kept = np.flatnonzero(category == "kept")
        if len(kept) > 3000:
            drop = np.setdiff1d(kept, np.random.default_rng(0).choice(kept, 3000, replace=False))
            mask = np.ones(len(category), dtype=bool)
            mask[drop] = False
            points, category = points[mask], category[mask]
        return render(
            request,
            "pictures.html",
            {
                "run": run,
                "voters": voters,
                "per_class": per_class,
                "sources_chart": charts.stacked_bars(source_rows, title="quarantined samples per source, by status"),
                "projection": charts.scatter(
                    points, category.tolist(), title="features, first two principal components, by status"
                ),
            },
        )

    @app.get("/img/{sample_id}")
    def image(request: Request, sample_id: str, thumb: int = 0) -> Response:
        check_sample_id(sample_id)
        # A sample id hashes the sample's content, so its picture never changes: cache it for good.
        etag = f'"{sample_id}{"-t" if thumb else ""}"'
        headers = {"Cache-Control": "private, max-age=31536000, immutable", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(samples.png(sample_id, thumbnail=bool(thumb)), media_type="image/png", headers=headers)

    # --- decisions -----------------------------------------------------------------------------
    @app.post("/runs/{run_id}/decide")
    def decide_view(
        request: Request,
        run_id: str,
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
        ids = list(dict.fromkeys(sample_id or []))
        if not ids:
            raise ValueError("choose at least one sample to decide on")
        if len(ids) > MAX_SELECTION:
            raise ValueError(f"at most {MAX_SELECTION} samples per decision, not {len(ids)}")
        for sid in ids:
            check_sample_id(sid)
        if len(note) > MAX_NOTE:
            raise ValueError(f"the note is {len(note)} characters; keep it under {MAX_NOTE}")
        label = _int_param(new_label, "new_label") if action == "relabel" else None
        if action == "relabel":
            classes = runs_cache.get(run_id).classes
            if label is None:
                raise ValueError("relabel needs the class to relabel to")
            if label not in classes:
                raise ValueError(f"class {label} is not a class of this dataset ({', '.join(map(str, classes))})")
        results = decide(ws, run_id, ids, action, reviewer=session.reviewer, note=note.strip() or None, new_label=label)
        if _wants_html(request):
            return RedirectResponse(_local_path(next_url, f"/runs/{run_id}/quarantine"), status_code=303)
        return JSONResponse(
            {
                "reviewer": session.reviewer,
                "results": [{"sample_id": r.sample_id, "status": r.status, "changed": r.changed} for r in results],
                "approved_version": run_row(ws, run_id).approved_version,
            }
        )

    # --- who may decide ------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        return render(request, "login.html", {"next": _local_path(next, "/"), "error": None})

    @app.post("/login")
    def login(
        request: Request, token: Annotated[str, Form()] = "", next_url: Annotated[str, Form(alias="next")] = "/"
    ) -> Response:
        same_origin(request)
        target = _local_path(next_url, "/")
        try:
            cookie, _ = auth.start_session(ws.catalog, token)
        except auth.AuthError as exc:
            return render(request, "login.html", {"next": target, "error": str(exc)}, 401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=auth.SESSION_HOURS * 3600,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/logout")
    def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
        reviewer_session(request, csrf_token)
        auth.end_session(ws.catalog, request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return app
