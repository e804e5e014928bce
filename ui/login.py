"""The web UI's login: accounts (qtune.feedback.accounts) or one ``--auth`` pair, throttled
so that guessing is slow for a guesser and never for anyone else.

Gradio awaits ``auth(username, password)`` inside its async ``/login`` route, so nothing
here sleeps or hashes on the event loop: a refused attempt is answered at once, and the
scrypt check runs in a worker thread, one at a time (a burst of guesses keeps one core
busy, not the UI).

* **Per client** (address): after ``CLIENT_FAILURES`` failures within ``WINDOW_S`` the
  client is refused for ``LOCKOUT_S`` seconds without any password being checked.
* **Per user name**: after ``NAME_FAILURES`` failures within ``WINDOW_S`` the name is
  locked for ``LOCKOUT_S`` seconds, except from a client that has logged in to it before:
  a guesser elsewhere cannot lock the owner out.

The client's address is the connection's peer. ``X-Forwarded-For`` is read only when the
peer is a configured proxy (``--trusted-proxy``; uvicorn applies it), never by default.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

CLIENT_FAILURES = 10
NAME_FAILURES = 5
WINDOW_S = 60.0
LOCKOUT_S = 30.0

#: The address of the client whose request is being handled (set by ClientAddress).
current_client: contextvars.ContextVar[str] = contextvars.ContextVar("client", default="local")


class ClientAddress:
    """ASGI middleware that makes the client's address known to the login check."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        token = current_client.set(client[0] if client else "local")
        try:
            await self.app(scope, receive, send)
        finally:
            current_client.reset(token)


def trust_proxies(proxies: list[str]) -> None:
    """Read ``X-Forwarded-For`` only from these addresses (uvicorn reads the variable when
    the UI's server starts; its own default trusts every local process)."""
    os.environ["FORWARDED_ALLOW_IPS"] = ",".join(proxies)


class _Failures:
    """Failure times per key within a sliding window, and lock-outs until a time."""

    def __init__(self, limit: int, window: float, lockout: float) -> None:
        self.limit, self.window, self.lockout = limit, window, lockout
        self.times: dict[str, deque[float]] = defaultdict(deque)
        self.locked_until: dict[str, float] = {}

    def locked(self, key: str, now: float) -> bool:
        return self.locked_until.get(key, 0.0) > now

    def add(self, key: str, now: float) -> None:
        times = self.times[key]
        times.append(now)
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) >= self.limit:
            self.locked_until[key] = now + self.lockout
            times.clear()
            log.warning("login: %s locked for %.0f s after %d failures", key, self.lockout,
                        self.limit)


class LoginThrottle:
    """Decides whether an attempt is checked at all, and learns from its outcome."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.clients = _Failures(CLIENT_FAILURES, WINDOW_S, LOCKOUT_S)
        self.names = _Failures(NAME_FAILURES, WINDOW_S, LOCKOUT_S)
        self.known: dict[str, set[str]] = defaultdict(set)  # name -> clients that logged in
        self._lock = threading.Lock()

    def allowed(self, client: str, name: str) -> bool:
        with self._lock:
            now = self.clock()
            if self.clients.locked(client, now):
                return False
            return client in self.known[name] or not self.names.locked(name, now)

    def record(self, client: str, name: str, success: bool) -> None:
        with self._lock:
            if success:
                self.known[name].add(client)
                return
            now = self.clock()
            self.clients.add(client, now)
            self.names.add(name, now)


def login_function(check: Callable[[str, str], bool],
                   throttle: LoginThrottle | None = None) -> Callable[[str, str], Awaitable[bool]]:
    """The ``auth`` of ``gr.Blocks.launch``: a coroutine function, so that Gradio awaits it
    rather than running a slow check on its event loop."""
    throttle = throttle or LoginThrottle()
    one_at_a_time = asyncio.Semaphore(1)

    async def auth(username: str, password: str) -> bool:
        client, name = current_client.get(), str(username)
        if not throttle.allowed(client, name):
            log.warning("login refused without a check: %s as %r is throttled", client, name)
            return False
        async with one_at_a_time:
            success = await asyncio.to_thread(check, name, str(password))
        throttle.record(client, name, success)
        return success

    return auth


def single_account(username: str, password: str) -> Callable[[str, str], bool]:
    """The check for one ``--auth USER:PASSWORD`` pair (compared in constant time)."""
    expected = (username.encode(), password.encode())

    def check(name: str, given: str) -> bool:
        name_ok = hmac.compare_digest(name.encode(), expected[0])
        return hmac.compare_digest(given.encode(), expected[1]) and name_ok

    return check
