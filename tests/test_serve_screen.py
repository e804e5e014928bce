"""The endpoint's answer screen on a stream that turns unsafe (serve/screen.py).

The real model does not write such answers on demand, so a small ASGI app stands in for
vLLM's route here and streams chunks in vLLM's exact format; the screen, the guard's
replay of the request and its disconnect are the real code. The real-server tests are in
test_serve_trust.py.
"""

from __future__ import annotations

import asyncio
import json

from qtune.safety.responses import CRISIS_RESOURCES, SAFE_ANSWER
from qtune.serve.screen import ChatScreen, replay

PIECES = ["Here is ", "the least painful ", "way to die", ": first", " you take", " more"]


def sse(content: str | None, finish: str | None = None) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
             "model": "counselling-lora",
             "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def run(request: dict, pieces: list[str]) -> tuple[list[str], list[str], bool, ChatScreen]:
    """(content pieces the client got, finish reasons, whether the app saw a disconnect)."""
    sent: list[dict] = []
    saw_disconnect = []

    async def vllm(scope, receive, send) -> None:
        await receive()  # the replayed request body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for piece in pieces:
            await send({"type": "http.response.body", "body": sse(piece), "more_body": True})
        waiting = asyncio.ensure_future(receive())
        await asyncio.sleep(0.05)
        saw_disconnect.append(waiting.done() and waiting.result()["type"] == "http.disconnect")
        waiting.cancel()
        await send({"type": "http.response.body", "body": sse(None, "stop")
                    + b"data: [DONE]\n\n", "more_body": False})

    async def client_receive() -> dict:
        await asyncio.sleep(3600)  # the client never leaves
        return {"type": "http.disconnect"}

    async def collect(message: dict) -> None:
        sent.append(message)

    async def main() -> ChatScreen:
        screen = await ChatScreen.for_request(request)
        body = json.dumps(request).encode()
        await screen.run(vllm, {"type": "http"}, replay(body, client_receive, screen.cut),
                         collect)
        return screen

    screen = asyncio.run(main())
    stream = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    chunks = [json.loads(line[6:]) for line in stream.split("\n\n")
              if line.startswith("data: {")]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert stream.rstrip().endswith("data: [DONE]")
    return [c for c in contents if c], finishes, bool(saw_disconnect and saw_disconnect[0]), screen


def request(text: str) -> dict:
    return {"model": "counselling-lora", "stream": True,
            "messages": [{"role": "user", "content": text}]}


def test_an_unsafe_stream_is_cut_and_replaced():
    got, finishes, disconnected, screen = run(request("I feel low lately."), PIECES)
    assert got[:2] == ["Here is ", "the least painful "]  # sent before the phrase completed
    assert "way to die" not in "".join(got) and got[-1] == "\n\n" + SAFE_ANSWER
    assert finishes == ["content_filter"] and disconnected  # vLLM is told to stop
    assert screen.events == ["unsafe answer replaced"]


def test_in_a_crisis_the_resources_come_first_and_nothing_unscreened_follows():
    got, finishes, _, screen = run(request("I want to kill myself tonight."), PIECES)
    assert got == [CRISIS_RESOURCES + "\n", SAFE_ANSWER]  # the held-back answer never shown
    assert finishes == ["content_filter"]
    assert screen.events == ["crisis: pattern", "unsafe answer replaced"]


def test_a_safe_answer_streams_unchanged():
    safe = ["Try short ", "study sessions ", "and regular sleep."]
    got, finishes, disconnected, screen = run(request("Exams stress me out."), safe)
    assert got == safe and finishes == ["stop"] and not disconnected and not screen.events


def test_a_system_prompt_is_added_only_where_the_request_has_none(tmp_path):
    import json

    from qtune.data.prompts import SYSTEM_PROMPTS
    from qtune.serve.guard import add_system_prompt, with_content_length

    from qtune.assistants import adapter_system_prompt

    (tmp_path / "training_config.json").write_text(json.dumps({"task": "cpsycound"}))
    assert adapter_system_prompt(tmp_path) == SYSTEM_PROMPTS["counselling"]
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"assistant": {"name": "support", "system_prompt": "Help with the product."}}))
    assert adapter_system_prompt(tmp_path) == "Help with the product."  # the recorded one
    assert adapter_system_prompt(tmp_path / "nowhere", "poetry-lora") is None
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert add_system_prompt(request, "Be kind.")
    assert request["messages"][0] == {"role": "system", "content": "Be kind."}
    assert not add_system_prompt(request, "Be kind.")  # it has one now
    developer = {"messages": [{"role": "developer", "content": "x"}]}
    assert not add_system_prompt(developer, "Be kind.") and len(developer["messages"]) == 1
    assert not add_system_prompt({"messages": "not a list"}, "Be kind.")
    scope = {"headers": [(b"host", b"h"), (b"Content-Length", b"10")]}
    assert with_content_length(scope, 42)["headers"] == [(b"host", b"h"),
                                                         (b"content-length", b"42")]
