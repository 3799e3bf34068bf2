"""Throttling logins per client address, so reviewer tokens cannot be tried at request rate.

A token has 256 random bits, so guessing one is hopeless anyway; the throttle keeps a client from
turning the login form into a load test and makes an attempt visible in the audit log (each failed
login is recorded there by :func:`sanitize.web.auth.record_failed_login`) rather than buried in it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class LoginThrottle:
    """At most ``failures`` failed logins per client address in any ``window_s`` seconds.

    The state lives in this object, in memory: one per app (``app.state.login_throttle``), so per
    server process, and forgotten when the server restarts. Several worker processes would each
    keep their own. Every method holds one lock, so the app's worker threads may share it.

    An attempt is counted when it is admitted, before the token is checked, and a successful login
    clears its client: so concurrent requests cannot slip past the count between check and failure.
    At most ``max_clients`` addresses are remembered (the least recently failing are forgotten
    first), so a flood of addresses cannot grow the memory without bound. Behind a reverse proxy
    every client has the proxy's address and shares one budget.
    """

    def __init__(
        self,
        *,
        failures: int = 5,
        window_s: float = 60.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self.max_clients = max_clients
        self.clock = clock
        self._lock = threading.Lock()
        # Per client, the times of its last ``failures`` counted attempts (oldest first); clients
        # ordered by their latest attempt, so the stale ones are at the front.
        self._attempts: OrderedDict[str, deque[float]] = OrderedDict()

    def admit(self, client: str) -> int | None:
        """None when ``client`` may try to log in now (the attempt is counted as a failure until
        :meth:`succeeded` clears it); else the whole seconds until it may try again."""
        with self._lock:
            now = self.clock()
            attempts = self._live(client, now)
            if len(attempts) >= self.failures:
                return max(1, math.ceil(attempts[0] + self.window_s - now))
            attempts.append(now)
            self._attempts[client] = attempts
            self._attempts.move_to_end(client)
            while len(self._attempts) > self.max_clients:
                self._attempts.popitem(last=False)
            return None

    def succeeded(self, client: str) -> None:
        """A login from ``client`` worked: its failures are forgotten."""
        with self._lock:
            self._attempts.pop(client, None)

    def failures_of(self, client: str) -> int:
        """How many of ``client``'s failed logins count now."""
        with self._lock:
            return len(self._live(client, self.clock()))

    def tracked(self) -> int:
        """How many client addresses are remembered."""
        with self._lock:
            return len(self._attempts)

    def _live(self, client: str, now: float) -> deque[float]:
        """``client``'s attempts within the window (a new, unstored deque when it has none), after
        forgetting every client whose latest attempt is older than the window. Lock held."""
        horizon = now - self.window_s
        # The order puts the stalest clients first, so this stops at the first live one.
        while self._attempts:
            oldest, attempts = next(iter(self._attempts.items()))
            if attempts[-1] > horizon:
                break
            del self._attempts[oldest]
        attempts = self._attempts.get(client) or deque(maxlen=self.failures)
        while attempts and attempts[0] <= horizon:
            attempts.popleft()
        return attempts
