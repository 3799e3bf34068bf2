"""The review web app: server-rendered pages over the catalog and the store, decisions by reviewers.

Pages are read-only for everyone who can reach the server (it listens on loopback by default);
deciding needs a session started with a reviewer token, and every mutating form carries the
session's CSRF token. Decisions go through :func:`sanitize.review.decide`, which records the
reviewer, time and note, appends to the audit log and refuses conflicting decisions.

Each page has its router in :mod:`sanitize.web.routes`; what they share (state, templates, error
pages) is in :mod:`sanitize.web.views`, who may decide in :mod:`sanitize.web.guards`.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware

from sanitize.web.data import RunCache, SampleStore
from sanitize.web.hosts import AllowedHosts, HostGuard
from sanitize.web.routes import browse, decide, images, login, pictures, quarantine, runs, samples, similar, trigger
from sanitize.web.throttle import LoginThrottle
from sanitize.web.views import ERROR_PAGES, HERE, SESSION_COOKIE, security_headers, templates
from sanitize.workspace import Workspace

__all__ = ["SESSION_COOKIE", "create_app"]

ROUTERS = (
    runs.router,
    quarantine.router,
    browse.router,
    samples.router,
    similar.router,
    trigger.router,
    pictures.router,
    images.router,
    decide.router,
    login.router,
)


def create_app(ws: Workspace | None = None, *, allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The review app over ``ws`` (default: the workspace of ``SANITIZE_HOME``).

    It answers only requests whose ``Host`` is loopback (``127.0.0.1``, ``localhost``, ``[::1]``,
    any port) or one of ``allowed_hosts`` (see :meth:`sanitize.web.hosts.AllowedHosts.of`); any
    other gets a 400 before a route runs. A malformed allowed host raises ValueError.
    """
    ws = ws or Workspace()
    hosts = AllowedHosts.of(allowed_hosts)
    # Open the catalog now (which also upgrades an old one) so a bad catalog URL fails at start,
    # not on the first request.
    ws.catalog  # noqa: B018
    app = FastAPI(
        title="sanitize review",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        exception_handlers=ERROR_PAGES,
        # The first is the outermost: a refused host's 400 carries the security headers too.
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=security_headers), Middleware(HostGuard, allowed=hosts)],
    )
    app.state.workspace, app.state.runs, app.state.samples = ws, RunCache(ws), SampleStore(ws)
    app.state.templates = templates()
    app.state.allowed_hosts = hosts
    app.state.login_throttle = LoginThrottle()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for router in ROUTERS:
        app.include_router(router)
    return app
