"""Per-client rate limits of the web UI (Chatbot Arena keeps a script from flooding the
leaderboard or the model the same way): a sliding window of event times per client."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

import gradio as gr


class RateLimiter:
    """At most ``limit`` events per ``window_s`` seconds for each client; 0 means no limit."""

    def __init__(self, limit: int, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()  # Gradio runs handlers on several threads

    def allow(self, client: str) -> bool:
        """Count one event for ``client`` if it is within the limit; False (not counted)
        when it is not."""
        if self.limit <= 0:
            return True
        now = self.clock()
        with self._lock:
            events = self._events[client]
            while events and now - events[0] >= self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True


def client_of(request: gr.Request | None) -> str:
    """The client's address (a handler called in process, as the tests do, is "local")."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "local"
