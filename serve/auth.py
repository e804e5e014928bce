"""The API key guards every route of the served endpoint, not only /v1.

vLLM's own ``--api-key`` check (its ``AuthenticationMiddleware``) guards the paths under
``/v1``, ``/v2``, ``/inference`` and ``/cohere`` only: ``/invocations`` (SageMaker),
``/tokenize``, ``/detokenize``, ``/metrics``, ``/docs``, ``/openapi.json`` and the runtime
adapter routes answer anyone. ``qtune serve`` adds this middleware through vLLM's own
``--middleware`` option whenever a key is set: every HTTP and WebSocket request except
``/health`` (probes) and CORS preflights must carry ``Authorization: Bearer <key>``.

It runs inside vLLM's API server process and reads the key from ``VLLM_API_KEY``, which
``qtune serve`` sets in that process's environment (never on its command line). The token
check itself is vLLM's (constant-time comparison of hashes).
"""

from __future__ import annotations

import os

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from vllm.entrypoints.serve.middleware.authenticate import AuthenticationMiddleware

#: Paths anyone may call: the health probe (Docker, load balancers, `qtune serve` itself).
OPEN_PATHS = frozenset({"/health"})


class GuardEveryRoute(AuthenticationMiddleware):
    """vLLM's bearer-token check, applied to every path but ``OPEN_PATHS``."""

    def __init__(self, app: ASGIApp) -> None:
        key = os.environ.get("VLLM_API_KEY")
        super().__init__(app, tokens=[key] if key else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (not self.api_tokens or scope["type"] not in ("http", "websocket")
                or scope.get("method") == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if path in OPEN_PATHS or self.verify_token(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"error": "Unauthorized: send Authorization: Bearer <key>"},
                                status_code=401)
        await response(scope, receive, send)
