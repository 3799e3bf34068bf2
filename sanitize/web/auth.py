"""Who may decide: reviewer tokens, browser sessions and their CSRF tokens, all in the catalog.

A reviewer's token is shown once, when it is made (``sanitize reviewer add NAME``); the catalog
keeps only its SHA-256, so a copy of the database does not let anyone decide. Tokens are 256 random
bits, which is why a fast hash is enough here: there is nothing to guess by brute force. Logging in
with a token starts a session: a random cookie value (again stored as its SHA-256) and a per-session
CSRF token that every mutating form must send back. Revoking a reviewer ends their sessions at once.
Nothing is deleted: revoked reviewers and ended sessions stay, with the time they ended.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from sanitize.catalog import Catalog, Reviewer, ReviewSession
from sanitize.errors import NotFoundError, SanitizeError

REVIEWER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
TOKEN_PREFIX = "srt_"
SESSION_HOURS = 12


class AuthError(SanitizeError):
    """A token or session that does not let its holder decide."""


@dataclass(frozen=True)
class ReviewerInfo:
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class SessionInfo:
    """A logged-in browser: who it is and the CSRF token its forms must carry."""

    reviewer: str
    csrf_token: str

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf_token.encode(), (sent or "").encode())


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _aware(t: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive; every time in the catalog is UTC.
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def check_reviewer_name(name: str) -> str:
    if not REVIEWER_NAME.fullmatch(name):
        raise ValueError(
            f"bad reviewer name {name!r}: use 1 to 100 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def add_reviewer(catalog: Catalog, name: str, *, rotate: bool = False) -> str:
    """Make a reviewer (or give a revoked one, or with ``rotate`` an active one, a new token).

    Returns the token; it is not stored and cannot be shown again. A new token ends the reviewer's
    open sessions.
    """
    check_reviewer_name(name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with catalog.session() as s:
        reviewer = s.get(Reviewer, name)
        if reviewer is None:
            s.add(Reviewer(name=name, token_sha256=sha256_hex(token)))
            catalog.audit(s, "admin", "reviewer.add", name)
            return token
        if reviewer.revoked_at is None and not rotate:
            raise SanitizeError(
                f"reviewer {name!r} already exists; give them a new token with 'sanitize reviewer add {name} --rotate'"
            )
        reviewer.token_sha256 = sha256_hex(token)
        reviewer.revoked_at = None
        _end_sessions(s, name)
        catalog.audit(s, "admin", "reviewer.token", name, rotated=True)
    return token


def list_reviewers(catalog: Catalog) -> list[ReviewerInfo]:
    with catalog.session() as s:
        return [
            ReviewerInfo(r.name, _aware(r.created_at), _aware(r.revoked_at) if r.revoked_at else None)
            for r in s.scalars(select(Reviewer).order_by(Reviewer.name))
        ]


def revoke_reviewer(catalog: Catalog, name: str) -> bool:
    """Revoke a reviewer's token and end their sessions. False when they were already revoked."""
    with catalog.session() as s:
        reviewer = s.get(Reviewer, name)
        if reviewer is None:
            raise NotFoundError(f"unknown reviewer {name!r}; list them with 'sanitize reviewer list'")
        if reviewer.revoked_at is not None:
            return False
        reviewer.revoked_at = datetime.now(UTC)
        _end_sessions(s, name)
        catalog.audit(s, "admin", "reviewer.revoke", name)
    return True


def _end_sessions(s: Session, name: str) -> None:
    s.execute(
        update(ReviewSession)
        .where(ReviewSession.reviewer == name, ReviewSession.ended_at.is_(None))
        .values(ended_at=datetime.now(UTC))
    )


def start_session(catalog: Catalog, token: str) -> tuple[str, SessionInfo]:
    """Log in with a reviewer token: returns the session cookie's value and the session."""
    token = token.strip()
    if not token:
        raise AuthError("enter your reviewer token (made with 'sanitize reviewer add NAME')")
    with catalog.session() as s:
        reviewer = s.scalars(
            select(Reviewer).where(Reviewer.token_sha256 == sha256_hex(token), Reviewer.revoked_at.is_(None))
        ).first()
        if reviewer is None:
            raise AuthError("unknown or revoked reviewer token")
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        s.add(
            ReviewSession(
                id_sha256=sha256_hex(cookie),
                reviewer=reviewer.name,
                csrf_token=csrf,
                created_at=now,
                expires_at=now + timedelta(hours=SESSION_HOURS),
            )
        )
        catalog.audit(s, reviewer.name, "review.login", reviewer.name)
        return cookie, SessionInfo(reviewer.name, csrf)


def record_failed_login(catalog: Catalog, client: str, reviewer: str | None = None) -> None:
    """Append a ``review.login_failed`` record: the client's address and the reviewer name it gave
    (kept only when it is a well-formed name). Never the token tried: a near-miss, or a real token
    pasted into the wrong server, must not end up in a log."""
    named = reviewer if reviewer and REVIEWER_NAME.fullmatch(reviewer) else None
    with catalog.session() as s:
        catalog.audit(s, "anonymous", "review.login_failed", client[:200], client=client[:200], reviewer=named)


def session_for(catalog: Catalog, cookie: str | None) -> SessionInfo | None:
    """The live session behind a cookie value, or None (no cookie, ended, expired, or reviewer revoked)."""
    if not cookie:
        return None
    with catalog.session() as s:
        row = s.execute(
            select(ReviewSession, Reviewer.revoked_at)
            .join(Reviewer, Reviewer.name == ReviewSession.reviewer)
            .where(ReviewSession.id_sha256 == sha256_hex(cookie))
        ).first()
        if row is None:
            return None
        session, revoked_at = row
        if session.ended_at is not None or revoked_at is not None:
            return None
        if _aware(session.expires_at) <= datetime.now(UTC):
            return None
        return SessionInfo(session.reviewer, session.csrf_token)


def end_session(catalog: Catalog, cookie: str) -> None:
    with catalog.session() as s:
        session = s.get(ReviewSession, sha256_hex(cookie))
        if session is not None and session.ended_at is None:
            session.ended_at = datetime.now(UTC)
            catalog.audit(s, session.reviewer, "review.logout", session.reviewer)
