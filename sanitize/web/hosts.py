"""Which ``Host`` headers the review server answers: loopback by default, plus the names it is given.

A page on another site can point its own name at 127.0.0.1 (DNS rebinding) and then read this
server as same-origin; the one thing it cannot change is the ``Host`` header its browser sends,
which names the attacker's site. So every request whose Host is not one of the configured names is
refused with a 400 before any route runs.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")

# A DNS name or IPv4 address, or an IPv6 address in brackets; then an optional port.
_HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?\.?)(?::(?P<port>[0-9]{1,5}))?")
MAX_SHOWN = 100


def parse_host(value: str) -> tuple[str, int | None] | None:
    """(name, port) of a ``Host`` header's value, lower-cased, without a final dot; None when malformed."""
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return None
    name, port = match["name"], match["port"]
    return name.removesuffix("."), None if port is None else int(port)


@dataclass(frozen=True)
class AllowedHosts:
    """The host names (each with any port, or with one port) this server answers to."""

    names: frozenset[tuple[str, int | None]]

    @classmethod
    def of(cls, extra: Iterable[str] | None = None) -> AllowedHosts:
        """Loopback plus ``extra``: names, IP addresses (IPv6 with or without brackets), each
        optionally with ``:PORT`` to allow that port only. A malformed name raises ValueError."""
        names = set()
        for entry in [*LOOPBACK, *(extra or ())]:
            text = entry.strip()
            if text.count(":") > 1 and not text.startswith("["):
                text = f"[{text}]"  # a bare IPv6 address, as `--host ::1` takes it
            parsed = parse_host(text)
            if parsed is None or parsed[1] == 0 or (parsed[1] or 0) > 65535:
                raise ValueError(
                    f"bad allowed host {entry[:MAX_SHOWN]!r}: give a host name or IP address, optionally with :PORT"
                )
            names.add(parsed)
        return cls(frozenset(names))

    def admits(self, host: str | None) -> bool:
        """Whether a request with this ``Host`` header is served."""
        parsed = parse_host(host) if host else None
        if parsed is None:
            return False
        return (parsed[0], None) in self.names or parsed in self.names

    def describe(self) -> str:
        return ", ".join(sorted(n if p is None else f"{n}:{p}" for n, p in self.names))


def refusal(host: str | None) -> str:
    """The short plain message a refused request gets, naming its host (escaped, cut short)."""
    if not host:
        return "refused a request without a Host header\n"
    shown = html.escape(repr(host[:MAX_SHOWN]), quote=False)
    return f"refused the host {shown}: this server answers only to the names it was given (see --allowed-host)\n"


class HostGuard:
    """ASGI middleware: refuse (400) every request whose ``Host`` header ``allowed`` does not admit."""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host")
            if not self.allowed.admits(host):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await PlainTextResponse(refusal(host), status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)
