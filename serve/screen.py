"""The crisis screen on the served endpoint's chat completions, streamed and not.

The same checks as the web UI (:mod:`qtune.safety.detector`): the user's messages,
alone and the last few together; the answer against the unsafe-answer patterns.

* A crisis in the conversation: the crisis resources come first. Streamed, they are the
  first chunk, sent as soon as vLLM starts answering; the answer itself is then held back
  and screened whole before it is sent (nobody in crisis is shown an unscreened word).
* No crisis: the answer streams as it comes and is screened as it grows. When it turns
  unsafe the stream is cut: the safe message is sent with ``finish_reason:
  "content_filter"`` (OpenAI's reason for a filtered answer), vLLM is told the client has
  gone (the slot is freed), and the text streamed before the unsafe phrase stays with the
  client (the residual risk, docs/security.md).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field

from qtune.safety.detector import check_conversation, is_unsafe_answer
from qtune.safety.responses import CRISIS_RESOURCES, SAFE_ANSWER
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Largest request body the screen reads (vLLM refuses far smaller prompts anyway).
MAX_BODY_BYTES = 16 * 1024 * 1024
UNSAFE_EVENT = "unsafe answer replaced"


class RequestTooLarge(ValueError):
    """The request body is over MAX_BODY_BYTES."""


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body (raises RequestTooLarge past ``limit``)."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise RequestTooLarge(f"the request body is over {limit:,} bytes")
        parts.append(part)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def replay(body: bytes, receive: Receive, gone: asyncio.Event | None = None) -> Receive:
    """A ``receive`` that gives ``body`` again, then the client's own messages (its
    disconnect), or a disconnect as soon as ``gone`` is set."""
    delivered = False

    async def receive_again() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        if gone is None:
            return await receive()
        client, ended = asyncio.ensure_future(receive()), asyncio.ensure_future(gone.wait())
        done, pending = await asyncio.wait({client, ended}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return client.result() if client in done else {"type": "http.disconnect"}

    return receive_again


def user_texts(messages: object) -> list[str]:
    """The text of every user message (string content or text parts), oldest first."""
    texts = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content
                               if isinstance(part, dict) and isinstance(part.get("text"), str))
        if isinstance(content, str):
            texts.append(content)
    return texts


@dataclass
class ChatScreen:
    """Screens one chat completion request and its answer."""

    crisis: str | None  # the detector's layer when the conversation signals a crisis
    stream: bool
    #: set when the answer was cut: the request's ``receive`` then reports a disconnect
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    #: what the screen did (stored as flags, never with the text)
    events: list[str] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=lambda: defaultdict(str))
    held: list[bytes] = field(default_factory=list)
    pending: bytes = b""
    resources_sent: bool = False
    sse: bool = False

    @classmethod
    async def for_request(cls, request: dict) -> ChatScreen:
        users = user_texts(request.get("messages"))
        verdict = await asyncio.to_thread(check_conversation, users)  # the encoder
        screen = cls(crisis=verdict.layer if verdict.crisis else None,
                     stream=bool(request.get("stream")))
        if screen.crisis:
            screen.events.append(f"crisis: {screen.crisis}")
        return screen

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        if self.stream:
            await app(scope, receive, self._streamer(send))
            return
        answer: list[Message] = []

        async def keep(message: Message) -> None:
            answer.append(message)

        await app(scope, receive, keep)
        start, body = answer[0], b"".join(m.get("body", b"") for m in answer[1:])
        if start["status"] == 200:
            body = self._screen_whole(body)
            start = {**start, "headers": [(k, v) for k, v in start.get("headers", [])
                                          if k.lower() != b"content-length"]
                     + [(b"content-length", str(len(body)).encode())]}
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # --- one answer ------------------------------------------------------------------------

    def _screen_whole(self, body: bytes) -> bytes:
        try:
            reply = json.loads(body)
            choices = reply["choices"]
        except (ValueError, KeyError, TypeError):
            return body
        for choice in choices:
            message = choice.get("message") or {}
            content = message.get("content") or ""
            if is_unsafe_answer(content):
                message["content"], choice["finish_reason"] = SAFE_ANSWER, "content_filter"
                self.events.append(UNSAFE_EVENT)
            elif self.crisis:
                message["content"] = f"{CRISIS_RESOURCES}\n{content}"
        return json.dumps(reply).encode()

    # --- a streamed answer -----------------------------------------------------------------

    def _streamer(self, send: Send) -> Send:
        async def screened_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                self.sse = (message["status"] == 200
                            and b"text/event-stream" in headers.get(b"content-type", b""))
                await send(message)
                return
            if not self.sse:
                await send(message)
                return
            if self.cut.is_set():
                return  # the client already has the end of the answer
            self.pending += message.get("body", b"")
            *events, self.pending = self.pending.split(b"\n\n")
            out = b"".join([self._event(event) for event in events])
            more = bool(message.get("more_body", False)) and not self.cut.is_set()
            if out or not more:
                await send({"type": "http.response.body", "body": out, "more_body": more})

        return screened_send

    def _event(self, raw: bytes) -> bytes:
        """What to send for one server-sent event of vLLM's stream."""
        data = raw.strip().removeprefix(b"data:").strip()
        if not data:
            return b""
        if data == b"[DONE]":
            flushed, self.held = b"".join(self.held), []
            return flushed + raw + b"\n\n"
        try:
            chunk = json.loads(data)
        except ValueError:
            return raw + b"\n\n"
        out = b""
        if self.crisis and not self.resources_sent:
            self.resources_sent = True
            out = _event_bytes(_chunk_like(chunk, 0, CRISIS_RESOURCES + "\n"))
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            self.texts[index] += (choice.get("delta") or {}).get("content") or ""
            if is_unsafe_answer(self.texts[index]):
                return out + self._replace(chunk, index)
        if self.crisis:
            self.held.append(raw + b"\n\n")
            return out
        return out + raw + b"\n\n"

    def _replace(self, chunk: dict, index: int) -> bytes:
        """End the answer with the safe message; what was held is never sent."""
        self.events.append(UNSAFE_EVENT)
        self.held = []
        self.cut.set()
        text = SAFE_ANSWER if self.crisis else "\n\n" + SAFE_ANSWER
        return (_event_bytes(_chunk_like(chunk, index, text, "content_filter"))
                + b"data: [DONE]\n\n")


def _chunk_like(chunk: dict, index: int, text: str, finish: str | None = None) -> dict:
    """A chat.completion.chunk of the same completion as ``chunk``, carrying ``text``."""
    return {"id": chunk.get("id"), "object": "chat.completion.chunk",
            "created": chunk.get("created"), "model": chunk.get("model"),
            "choices": [{"index": index, "delta": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish}]}


def _event_bytes(chunk: dict) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"
