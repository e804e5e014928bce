"""What the served endpoint does beyond vLLM: crisis screening, moderation, adapter checks
at runtime load, and a health check that asks the engine a question.

``qtune serve`` adds :class:`ServeGuard` to vLLM's API server through vLLM's own
``--middleware`` option (inside the API-key guard, so every route here needs the key):

* ``POST /v1/moderations`` answers in OpenAI's schema from the crisis detector
  (:mod:`qtune.safety.moderation`), so ``client.moderations.create`` works.
* ``POST /v1/chat/completions`` to a screened model (``QTUNE_SCREENED_MODELS``: the
  counselling adapters by default) is screened as the web UI screens it: a crisis in the
  user's messages puts the crisis resources first in the answer (the first streamed
  chunk), and an answer that encourages or describes self-harm is replaced by the safe
  message (``finish_reason: "content_filter"``), see :mod:`qtune.serve.screen`.
* ``POST /v1/chat/completions`` to an adapter without a system message gets the system
  prompt the adapter was trained with (``QTUNE_ADAPTER_PROMPTS``: its recorded assistant's,
  else its task's), as the web UI sends it: the endpoint's ``math-qwth`` is the UI's math
  assistant.
* ``POST /v1/load_lora_adapter`` reads the adapter's weights in full first and refuses
  one with a NaN, an infinity or an absurd value (it would poison every model).
* ``GET /health`` also asks the base model for one greedy token of a fixed prompt (at most
  every ``HEALTH_PROBE_EVERY_S``) and answers 503 when the answer changes or is empty: an
  engine that answers every request with empty text is not healthy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path

import httpx
from qtune.serve.adapters import weights_refusal
from qtune.serve.screen import ChatScreen, RequestTooLarge, read_body, replay
from qtune.serve.server import (
    ADAPTER_PROMPTS_ENV,
    BASE_MODEL_ENV,
    CRISIS_SCREEN_ENV,
    SCREENED_MODELS_ENV,
    screens_adapter,
)
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from qtune.assistants import adapter_system_prompt

log = logging.getLogger(__name__)

#: The engine is asked again at most this often; /health answers from the last verdict.
HEALTH_PROBE_EVERY_S = 10.0
HEALTH_PROBE_PROMPT = "The capital of France is"
HEALTH_PROBE_TIMEOUT_S = 30.0


def _json_list(name: str) -> list[str]:
    try:
        value = json.loads(os.environ.get(name) or "[]")
    except ValueError:
        log.error("%s is not a JSON list; nothing is screened", name)
        return []
    return [str(item) for item in value] if isinstance(value, list) else []


def _json_object(name: str) -> dict[str, str]:
    try:
        value = json.loads(os.environ.get(name) or "{}")
    except ValueError:
        log.error("%s is not a JSON object; ignored", name)
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def add_system_prompt(request: dict, prompt: str | None) -> bool:
    """Put ``prompt`` first in a chat request that has no system (or developer) message;
    whether the request changed. A client's own system message always wins."""
    messages = request.get("messages")
    if not prompt or not isinstance(messages, list) or any(
            isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages):
        return False
    request["messages"] = [{"role": "system", "content": prompt}, *messages]
    return True


def with_content_length(scope: Scope, length: int) -> Scope:
    """The request's scope with its Content-Length header set for a rewritten body."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


class HealthProbe:
    """One greedy token of a fixed prompt from the base model, compared with the first
    answer the engine gave (its known answer), at a bounded rate."""

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.known: str | None = None
        self.verdict: tuple[bool, str] = (True, "not probed yet")
        self.checked_at = -HEALTH_PROBE_EVERY_S
        self._lock = asyncio.Lock()

    async def check(self, address: tuple[str, int]) -> tuple[bool, str]:
        async with self._lock:  # concurrent probes share one engine request
            if time.monotonic() - self.checked_at < HEALTH_PROBE_EVERY_S or not self.model:
                return self.verdict
            self.verdict = await self._ask(address)
            self.checked_at = time.monotonic()
            return self.verdict

    async def _ask(self, address: tuple[str, int]) -> tuple[bool, str]:
        host, port = address
        key = os.environ.get("VLLM_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        request = {"model": self.model, "prompt": HEALTH_PROBE_PROMPT, "max_tokens": 1,
                   "temperature": 0}
        try:
            async with httpx.AsyncClient(timeout=HEALTH_PROBE_TIMEOUT_S) as client:
                response = await client.post(f"http://{host}:{port}/v1/completions",
                                             json=request, headers=headers)
            text = response.json()["choices"][0]["text"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as error:
            if isinstance(error, httpx.TimeoutException):
                return self.verdict  # busy, not broken: keep the last verdict
            return False, f"the engine did not answer a one-token request ({error!r})"
        if not text:
            return False, "the engine answered a one-token request with empty text"
        if self.known is None:
            self.known = text
        if text != self.known:
            return False, (f"the engine's greedy answer changed ({self.known!r} -> {text!r}): "
                           "its state is corrupt; restart the server")
        return True, "ok"


class ServeGuard:
    """ASGI middleware inside vLLM's API server (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.screened = set(_json_list(SCREENED_MODELS_ENV))
        self.crisis_screen = os.environ.get(CRISIS_SCREEN_ENV, "assistants")
        #: None: requests go as they come (`qtune serve --no-adapter-prompts`)
        self.prompts = (None if os.environ.get(ADAPTER_PROMPTS_ENV, "").strip() == "null"
                        else _json_object(ADAPTER_PROMPTS_ENV))
        self.health = HealthProbe(os.environ.get(BASE_MODEL_ENV))
        if self.screened:  # the encoder takes seconds to load: not on the first chat
            threading.Thread(target=_warm_up, name="qtune-screen-warm-up", daemon=True).start()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = (scope["method"], scope["path"].removeprefix(scope.get("root_path", "")))
        handler = {
            ("GET", "/health"): self._health,
            ("POST", "/v1/moderations"): self._moderations,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/load_lora_adapter"): self._load_adapter,
        }.get(route)
        if handler is None:
            await self.app(scope, receive, send)
            return
        try:
            await handler(scope, receive, send)
        except RequestTooLarge as error:
            await _error(scope, receive, send, 413, str(error))

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer: list[dict] = []

        async def keep(message: dict) -> None:
            answer.append(message)

        await self.app(scope, receive, keep)
        if answer[0]["status"] != 200:  # vLLM's own check failed: pass its answer on
            for message in answer:
                await send(message)
            return
        healthy, reason = await self.health.check(scope["server"])
        response = (JSONResponse({}, status_code=200) if healthy else
                    JSONResponse({"error": f"unhealthy: {reason}"}, status_code=503))
        await response(scope, receive, send)

    async def _moderations(self, scope: Scope, receive: Receive, send: Send) -> None:
        from qtune.safety.moderation import MODERATION_MODEL, moderate, moderation_inputs

        body = await read_body(receive)
        try:
            texts = moderation_inputs(json.loads(body or b"null"))
        except ValueError as error:
            await _error(scope, receive, send, 400, str(error))
            return
        results = await asyncio.to_thread(moderate, texts)  # the encoder: off the event loop
        reply = {"id": f"modr-{os.urandom(12).hex()}", "model": MODERATION_MODEL,
                 "results": results}
        await JSONResponse(reply)(scope, receive, send)

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.screened and not self.prompts:  # vLLM's route as it is
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            await self.app(scope, replay(body, receive), send)  # vLLM reports bad JSON
            return
        if add_system_prompt(request, (self.prompts or {}).get(request.get("model"))):
            body = json.dumps(request).encode()
            scope = with_content_length(scope, len(body))
        if request.get("model") not in self.screened:
            await self.app(scope, replay(body, receive), send)
            return
        screen = await ChatScreen.for_request(request)
        await screen.run(self.app, scope, replay(body, receive, screen.cut), send)
        for event in screen.events:
            await asyncio.to_thread(_store_flag, request["model"], event)

    async def _load_adapter(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        try:
            request = json.loads(body)
            folder = Path(request["lora_path"])
            name = str(request["lora_name"])
        except (ValueError, KeyError, TypeError):
            await self.app(scope, replay(body, receive), send)  # vLLM reports it
            return
        problem = await asyncio.to_thread(weights_refusal, folder)
        if problem:
            await _error(scope, receive, send, 400, f"adapter {name!r} refused: {problem}")
            return
        if await asyncio.to_thread(screens_adapter, self.crisis_screen, folder, name):
            self.screened.add(name)
        if self.prompts is not None and (
                prompt := await asyncio.to_thread(adapter_system_prompt, folder, name)):
            self.prompts[name] = prompt
        await self.app(scope, replay(body, receive), send)


async def _error(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    """An error in OpenAI's shape ({"error": {"message", "type", "code"}})."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    await JSONResponse(body, status_code=status)(scope, receive, send)


def _warm_up() -> None:
    from qtune.safety.detector import warm_up

    warm_up()


def _store_flag(model: str, reason: str) -> None:
    """Record the screen's event (never the text); a broken store must not break serving."""
    from qtune.feedback.store import FeedbackStore, FeedbackWriteError

    try:
        FeedbackStore().flag_endpoint(model, reason)
    except (FeedbackWriteError, ValueError) as error:
        log.warning("safety event not stored: %s", error)
