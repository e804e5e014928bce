"""The web UI's login, throttled: guessing a password costs time.

Gradio calls ``auth(username, password)`` for each attempt. Every failed attempt waits
``delay`` seconds before it is answered, and after ``max_failures`` failures within
``window`` seconds every attempt is refused until the window has passed (the right
password too: a lock-out, as SSH's MaxStartups does, is the price of slowing a guesser
who may try from many connections). Names and passwords are compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

FAILED_LOGIN_DELAY_S = 1.0
MAX_FAILURES = 10
WINDOW_S = 60.0


class ThrottledLogin:
    """``auth`` callable for ``gr.Blocks.launch``."""

    def __init__(self, username: str, password: str, delay: float = FAILED_LOGIN_DELAY_S,
                 max_failures: int = MAX_FAILURES, window: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._expected = (username.encode(), password.encode())
        self.delay, self.max_failures, self.window, self.clock = (
            delay, max_failures, window, clock)
        self._failures: deque[float] = deque()
        self._lock = threading.Lock()

    def locked(self) -> bool:
        """Too many recent failures: no attempt is accepted until the window passes."""
        with self._lock:
            now = self.clock()
            while self._failures and now - self._failures[0] > self.window:
                self._failures.popleft()
            return len(self._failures) >= self.max_failures

    def __call__(self, username: str, password: str) -> bool:
        name_ok = hmac.compare_digest(str(username).encode(), self._expected[0])
        password_ok = hmac.compare_digest(str(password).encode(), self._expected[1])
        if self.locked():
            log.warning("login refused: %d failed logins in the last %.0f s",
                        self.max_failures, self.window)
            return False
        if name_ok and password_ok:
            return True
        with self._lock:
            self._failures.append(self.clock())
        time.sleep(self.delay)
        return False
