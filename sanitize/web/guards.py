"""Who may change anything: a same-origin request from a reviewer's session with its CSRF token.

Routers call these first thing in a mutating route's body (not as dependencies), so a malformed
form is still answered as a bad request before the session is looked at.
"""

from __future__ import annotations

from fastapi import Request

from sanitize.web import auth
from sanitize.web.views import WebError, session_of


def same_origin(request: Request) -> None:
    """Refuse a request another site's page made (403)."""
    # SameSite=Strict keeps the cookie off cross-site requests; these headers refuse them outright.
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise WebError(403, f"refused a cross-site request from {origin[:100]}")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise WebError(403, "refused a cross-site request")


def reviewer_session(request: Request, csrf_token: str) -> auth.SessionInfo:
    """The reviewer's session of a same-origin request carrying that session's CSRF token (else 401/403)."""
    same_origin(request)
    session = session_of(request)
    if session is None:
        raise WebError(401, "log in with a reviewer token to decide (the page is read-only without one)")
    if not session.csrf_ok(csrf_token):
        raise WebError(403, "missing or wrong CSRF token: reload the page and try again")
    return session
