"""What the review app's routers share: the app's state, the templates, rendering a page, error pages
and the headers every response carries.

The app keeps its workspace, caches and templates on ``app.state`` (set by
:func:`sanitize.web.app.create_app`); routers reach them through the dependencies below, so no
route closes over them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, cast
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.templating import Jinja2Templates

from sanitize.errors import NotFoundError, SanitizeError
from sanitize.quarantine import STATUSES, ConflictError, ReviewClosedError
from sanitize.web import auth
from sanitize.web.data import RunCache, SampleStore
from sanitize.workspace import Workspace

HERE = Path(__file__).parent
SESSION_COOKIE = "sanitize_session"
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


# --- the app's state ---------------------------------------------------------------------------


def workspace(request: Request) -> Workspace:
    """The workspace the app serves."""
    return cast(Workspace, request.app.state.workspace)


def run_cache(request: Request) -> RunCache:
    """The app's cache of runs' scores and features."""
    return cast(RunCache, request.app.state.runs)


def sample_store(request: Request) -> SampleStore:
    """The app's reader of samples' pictures and provenance."""
    return cast(SampleStore, request.app.state.samples)


WorkspaceDep = Annotated[Workspace, Depends(workspace)]
RunsDep = Annotated[RunCache, Depends(run_cache)]
SamplesDep = Annotated[SampleStore, Depends(sample_store)]


def session_of(request: Request) -> auth.SessionInfo | None:
    """The reviewer's session the request's cookie belongs to, or None (read-only)."""
    return auth.session_for(workspace(request).catalog, request.cookies.get(SESSION_COOKIE))


# --- pages -------------------------------------------------------------------------------------


def templates() -> Jinja2Templates:
    """The page templates, autoescaped, with the filters they format numbers, times and links with."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v: "n/a" if v is None else (f"{v:.3g}" if math.isfinite(v) else str(v))
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{v:.1%}"
    env.filters["qs"] = lambda params, doseq=False: urlencode(params, doseq=doseq)
    env.filters["when"] = lambda t: "" if t is None else f"{t:%Y-%m-%d %H:%M:%S} UTC"
    env.filters["cls"] = class_name
    env.filters["cls_long"] = class_long
    env.globals["STATUSES"] = STATUSES
    return Jinja2Templates(env=env)


# A published version never changes, so its class names are read once per process.
_NAMES: dict[tuple[str, str, str], tuple[str, ...]] = {}


def class_names(ws: Workspace, dataset: str, version_id: str | None) -> tuple[str, ...]:
    """The name of each label of a run's version (its label map, else ``"0"``, ``"1"``, ...)."""
    if version_id is None:
        return ()
    key = (str(ws.store.home), dataset, version_id)
    if key not in _NAMES:
        try:
            _NAMES[key] = ws.store.class_names(ws.store.manifest(dataset, version_id))
        except (SanitizeError, OSError, ValueError):
            return ()
    return _NAMES[key]


def _name_of(names: Any, label: Any) -> str | None:
    try:
        index = int(label)
    except (TypeError, ValueError):
        return None
    names = names or ()
    return str(names[index]) if 0 <= index < len(names) else str(index)


def class_name(label: Any, names: Any = ()) -> str:
    """``{{ label | cls(class_names) }}``: the class's name (its index where the labels have none)."""
    name = _name_of(names, label)
    return str(label) if name is None else name


def class_long(label: Any, names: Any = ()) -> str:
    """``{{ label | cls_long(class_names) }}``: ``dog (2)``, or ``2`` where the class has no name but its index."""
    name = _name_of(names, label)
    if name is None or name == str(label):
        return str(label)
    return f"{name} ({label})"


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """The template ``name`` with ``context``, plus what every page shows (the session, where it is)."""
    query = request.url.query
    here = request.url.path + (f"?{query}" if query else "")
    context = {"session": session_of(request), "path": request.url.path, "here_url": here, **context}
    run = context.get("run")
    if "class_names" not in context and run is not None and hasattr(run, "version_id"):
        context["class_names"] = class_names(workspace(request), run.dataset, run.version_id)
    pages = cast(Jinja2Templates, request.app.state.templates)
    return pages.TemplateResponse(request, name, context, status_code=status)


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def local_path(target: str | None, default: str) -> str:
    """``target`` when it is a path on this site (never another host, never a scheme), else ``default``."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


# --- refusals ----------------------------------------------------------------------------------


def error_response(request: Request, status: int, message: str) -> Response:
    """The error page for a browser, the bare message for anything else."""
    if wants_html(request):
        return render(request, "error.html", {"status": status, "message": message}, status)
    return PlainTextResponse(message, status_code=status)


async def _web_error(request: Request, exc: WebError) -> Response:
    return error_response(request, exc.status, str(exc))


async def _not_found(request: Request, exc: NotFoundError) -> Response:
    return error_response(request, 404, str(exc))


async def _conflict(request: Request, exc: ConflictError) -> Response:
    return error_response(request, 409, f"conflict: {exc}")


async def _closed(request: Request, exc: ReviewClosedError) -> Response:
    return error_response(request, 409, str(exc))


async def _bad_value(request: Request, exc: ValueError | SanitizeError) -> Response:
    return error_response(request, 400, str(exc))


async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors())
    return error_response(request, 400, f"bad request: {problems}")


# Starlette picks the handler of the nearest class in the exception's MRO, so a ConflictError gets
# the 409 page although it is a SanitizeError too.
ERROR_PAGES: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    WebError: _web_error,
    NotFoundError: _not_found,
    ConflictError: _conflict,
    ReviewClosedError: _closed,
    ValueError: _bad_value,
    SanitizeError: _bad_value,
    RequestValidationError: _bad_request,
}


async def security_headers(request: Request, call_next: Any) -> Response:
    """Add :data:`SECURITY_HEADERS` to every response (a route may set its own first)."""
    response: Response = await call_next(request)
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    return response
