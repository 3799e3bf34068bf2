"""Logging in with a reviewer token (a session cookie, HttpOnly and SameSite=Strict) and out.

Each client address gets a few tries a minute (:class:`sanitize.web.throttle.LoginThrottle`, kept
in memory per server process on ``app.state.login_throttle``); every failed login is audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sanitize.web import auth
from sanitize.web.guards import reviewer_session, same_origin
from sanitize.web.throttle import LoginThrottle
from sanitize.web.views import SESSION_COOKIE, WorkspaceDep, error_response, local_path, render

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", {"next": local_path(next, "/"), "error": None})


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/login")
def login(
    request: Request,
    ws: WorkspaceDep,
    token: Annotated[str, Form()] = "",
    reviewer: Annotated[str, Form(max_length=200)] = "",
    next_url: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    """Start a session with a reviewer token. ``reviewer`` (optional, for scripts) names who is
    trying, for the audit record of a failure; the token alone decides who logs in."""
    same_origin(request)
    target = local_path(next_url, "/")
    client = client_address(request)
    throttle: LoginThrottle = request.app.state.login_throttle
    wait = throttle.admit(client)
    if wait is not None:
        # Not audited: no token was checked, and one client could otherwise write the log at
        # request rate; the failures that led here are each on record.
        refused = error_response(request, 429, f"too many failed logins from {client}: try again in {wait} s")
        refused.headers["Retry-After"] = str(wait)
        return refused
    try:
        cookie, _ = auth.start_session(ws.catalog, token)
    except auth.AuthError as exc:
        auth.record_failed_login(ws.catalog, client, reviewer.strip() or None)
        return render(request, "login.html", {"next": target, "error": str(exc)}, 401)
    throttle.succeeded(client)
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


@router.post("/logout")
def logout(request: Request, ws: WorkspaceDep, csrf_token: Annotated[str, Form()] = "") -> Response:
    reviewer_session(request, csrf_token)
    auth.end_session(ws.catalog, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
