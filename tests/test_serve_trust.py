"""The served endpoint's guards, against one real vLLM server with the shipped adapters:
a NaN adapter refused at start and at runtime load, moderation and the crisis screen
through the official ``openai`` client, the engine health probe, and Stop that stops.

The fast tests at the top need no server.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from qtune.serve.server import ServeConfig, VLLMServer
from safetensors.numpy import load_file, save_file

from qtune import adapter_format as fmt
from qtune.config import settings
from qtune.errors import QtuneError

API_KEY = "trust-test-key"
CRISIS_EN = "I have decided to end my life tonight, I already have the pills."
CRISIS_ZH = "我不想活了，今晚就想结束自己的生命。"
ORDINARY = "How do I stop procrastinating before exams?"


def poisoned_copy(source: Path, target: Path, value: float = float("nan")) -> Path:
    """A copy of an adapter with one weight set to ``value`` (stored as float32)."""
    shutil.copytree(source, target)
    weights = target / fmt.PEFT_WEIGHTS_FILE
    tensors = {name: array.astype(np.float32) for name, array in _load(weights).items()}
    first = sorted(tensors)[0]
    tensors[first].flat[7] = value
    save_file(tensors, str(weights))
    return target


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(path))
    except TypeError:  # bf16: widen it the way the check does
        return dict(fmt.tensor_values(path))


def shipped(name: str) -> Path:
    return settings().adapters_dir / name


# ----- no server ------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "words"), [(float("nan"), "NaN"), (float("inf"), "infinity"),
                                              (3e7, "magnitude 3e\\+07")])
def test_a_poisoned_adapter_is_refused_at_start(tmp_path, embedded_model, value, words):
    bad = poisoned_copy(shipped("counselling-lora"), tmp_path / "bad", value)
    config = ServeConfig(model=str(embedded_model), adapters=[("bad", bad)], adapters_dir=None)
    with pytest.raises(QtuneError, match=f"adapter 'bad'.*lora_[AB].*{words}.*poison"):
        VLLMServer(config)
    config.skip_broken_adapters = True
    server = VLLMServer(config)
    assert server.adapters == [] and "bad" in server.skipped[0]


def test_bf16_weights_are_read_in_full(tmp_path):
    """bf16 tensors (what PEFT saves from a bf16 model) are widened bit for bit."""
    values = np.array([1.5, -2.0, np.inf], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    path = tmp_path / "w.safetensors"
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bf16.tobytes())
    assert list(dict(fmt.tensor_values(path))["w"][:2]) == [1.5, -2.0]
    assert "infinity" in fmt.weight_problem(path)


def test_the_shipped_adapters_pass():
    for name in ("math-qwth", "math-lora", "counselling-qwth", "counselling-lora"):
        assert fmt.weight_problem(shipped(name) / fmt.PEFT_WEIGHTS_FILE) is None


# ----- one real server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory, embedded_model):
    from ui_fixtures import free_port

    scratch = tmp_path_factory.mktemp("trust")
    db = scratch / "feedback.db"
    adapters = [(name, shipped(name)) for name in ("counselling-lora", "math-lora")]
    config = ServeConfig(port=free_port(), api_key=API_KEY, adapters=adapters,
                         adapters_dir=None, max_model_len=1024, allow_runtime_lora=True,
                         log_path=scratch / "vllm.log")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QTUNE_DB", str(db))  # where the guard in vLLM's process stores flags
        with VLLMServer(config) as running:
            running.db, running.scratch = db, scratch
            yield running


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.api_base, api_key=API_KEY, max_retries=0)


def _greedy(client, model: str, text: str = "What is 12 times 7?") -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=16,
        temperature=0)
    return reply.choices[0].message.content


@pytest.mark.slow
def test_moderations_flag_crisis_messages_in_english_and_chinese(client):
    result = client.moderations.create(input=[CRISIS_EN, CRISIS_ZH, ORDINARY])
    flags = [r.flagged for r in result.results]
    assert flags == [True, True, False]
    first = result.results[0].model_dump(by_alias=True)
    assert first["categories"]["self-harm/intent"] is True
    assert first["category_scores"]["self-harm"] >= first["category_scores"]["self-harm/intent"]
    assert client.moderations.create(input=ORDINARY).results[0].flagged is False


@pytest.mark.slow
def test_moderations_refuse_bad_input_clearly(server):
    url = server.api_base + "/moderations"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    reply = httpx.post(url, json={"input": [{"type": "image_url"}]}, headers=headers)
    assert reply.status_code == 400 and "text only" in reply.json()["error"]["message"]
    assert httpx.post(url, json={"input": CRISIS_EN}).status_code == 401  # the key guards it


def _flags(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("select reason, source, model, message_id from flags").fetchall()


@pytest.mark.slow
def test_a_crisis_through_the_api_gets_the_resources_first(client, server):
    from qtune.safety.responses import CRISIS_RESOURCES

    messages = [{"role": "user", "content": CRISIS_EN}]
    reply = client.chat.completions.create(model="counselling-lora", messages=messages,
                                           max_tokens=24, temperature=0)
    assert reply.choices[0].message.content.startswith(CRISIS_RESOURCES)
    stream = client.chat.completions.create(model="counselling-lora", messages=messages,
                                            max_tokens=24, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and
              c.choices[0].delta.content]
    assert pieces[0] == CRISIS_RESOURCES + "\n" and len(pieces) > 1
    ordinary = _greedy(client, "counselling-lora", ORDINARY)
    assert "988" not in ordinary  # no resources beside an ordinary question
    assert "988" not in _greedy(client, "math-lora", CRISIS_EN)  # math is not screened
    stored = _flags(server.db)
    assert ("crisis: pattern", "endpoint screen", "counselling-lora", None) in stored
    with sqlite3.connect(server.db) as conn:  # the event only, never the text
        assert not conn.execute("select count(*) from messages").fetchone()[0]


@pytest.mark.slow
def test_an_adapter_answers_with_the_system_prompt_it_was_trained_with(client, server):
    """Called from a script without a system message, math-lora gets the math assistant's
    prompt, as in the UI; a client's own system message wins; the base model gets none."""
    from qtune.data.prompts import SYSTEM_PROMPTS

    question = {"role": "user", "content": "A pen costs $3. How much do 7 pens cost?"}

    def ask(model: str, *messages: dict):
        return client.chat.completions.create(model=model, messages=list(messages),
                                              max_tokens=24, temperature=0)

    bare = ask("math-lora", question)
    prompted = ask("math-lora", {"role": "system", "content": SYSTEM_PROMPTS["math"]}, question)
    assert bare.usage.prompt_tokens == prompted.usage.prompt_tokens
    assert bare.choices[0].message.content == prompted.choices[0].message.content
    own = ask("math-lora", {"role": "system", "content": "Answer in one word."}, question)
    assert own.usage.prompt_tokens < prompted.usage.prompt_tokens
    base = ask(server.base_name, question)
    assert base.usage.prompt_tokens < bare.usage.prompt_tokens  # nothing added to the base


@pytest.mark.slow
def test_a_nan_adapter_is_refused_at_runtime_load_and_the_rest_answer(client, server, capsys):
    from qtune.cli import main

    before = {model: _greedy(client, model)
              for model in ("smollm2-135m-instruct", "counselling-lora", "math-lora")}
    bad = poisoned_copy(shipped("math-lora"), server.scratch / "nan-adapter")
    raw = httpx.post(server.api_base + "/load_lora_adapter",
                     headers={"Authorization": f"Bearer {API_KEY}"},
                     json={"lora_name": "nan-adapter", "lora_path": str(bad)})
    assert raw.status_code == 400 and "NaN" in raw.json()["error"]["message"]
    common = ["adapters", "--api-base", server.api_base, "--api-key", API_KEY]
    assert main([*common, "load", "nan-adapter", str(bad)]) == 2
    assert "NaN" in capsys.readouterr().err
    assert "nan-adapter" not in {card.id for card in client.models.list().data}
    after: dict[str, str] = {}  # a mixed batch: every model at once, as before

    def ask(model: str) -> None:
        after[model] = _greedy(client, model)

    threads = [threading.Thread(target=ask, args=(m,)) for m in before]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert after == before and all(before.values())
    assert httpx.get(server.health_url).status_code == 200  # the engine probe agrees


def _generated_tokens(server) -> float:
    metrics = httpx.get(server.api_base.removesuffix("/v1") + "/metrics",
                        headers={"Authorization": f"Bearer {API_KEY}"}).text
    return sum(float(value) for value in
               re.findall(r"^vllm:generation_tokens_total\{[^}]*\} ([0-9.e+]+)$", metrics, re.M))


def _settled(server, quiet_s: float = 1.5) -> float:
    """The generation counter once it has stopped moving."""
    last = _generated_tokens(server)
    while True:
        time.sleep(quiet_s)
        now = _generated_tokens(server)
        if now == last:
            return now
        last = now


@pytest.mark.slow
def test_stop_stops_generation(server):
    """The UI's stream, closed after three pieces (what Stop, Retry or a closed tab do),
    frees vLLM's slot: a few tokens more at most, not the 400 asked for."""
    from qtune.ui.endpoint import Endpoint

    endpoint = Endpoint(server.api_base, API_KEY)
    start = _settled(server)
    pieces = endpoint.stream_chat("smollm2-135m-instruct",
                                  [{"role": "user", "content": "Write a very long story."}],
                                  temperature=0.8, max_tokens=400, seed=1)
    received = [next(pieces) for _ in range(3)]
    pieces.close()
    generated = _settled(server) - start
    print(f"tokens generated for 3 received pieces, after close: {generated:.0f}")
    assert len(received) == 3 and generated <= 3 + 8
