"""Logging in with a reviewer token (a session cookie, HttpOnly and SameSite=Strict) and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sanitize.web import auth
from sanitize.web.guards import reviewer_session, same_origin
from sanitize.web.views import SESSION_COOKIE, WorkspaceDep, local_path, render

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", {"next": local_path(next, "/"), "error": None})


@router.post("/login")
def login(
    request: Request,
    ws: WorkspaceDep,
    token: Annotated[str, Form()] = "",
    next_url: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    same_origin(request)
    target = local_path(next_url, "/")
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


@router.post("/logout")
def logout(request: Request, ws: WorkspaceDep, csrf_token: Annotated[str, Form()] = "") -> Response:
    reviewer_session(request, csrf_token)
    auth.end_session(ws.catalog, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
