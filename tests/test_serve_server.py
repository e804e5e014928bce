"""`qtune serve`: one real vLLM server.

The tests share one module-scoped vLLM server running the real embedded model with
the four shipped adapters (or, before they exist, two random PEFT adapters built on the
real model), an API key and runtime adapter loading, and talk to it with the official
``openai`` client. The command line alone is tested in ``test_serve_command.py``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from qtune.serve.server import ServeConfig, VLLMServer
from serve_fixtures import chat_prompt_ids, make_peft_adapter, peft_greedy_ids, served_greedy_ids
from ui_fixtures import SHIPPED, free_port

from qtune.config import settings
from qtune.errors import QtuneError

API_KEY = "qtune-test-key"
PROMPT = [{"role": "user", "content": "What is 12 times 7? Answer briefly."}]


def _shipped_adapters() -> list[tuple[str, Path]] | None:
    root = settings().adapters_dir
    found = [(name, root / name) for name in SHIPPED]
    if all((path / "adapter_model.safetensors").is_file() for _, path in found):
        return found
    return None


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path):
    shipped = _shipped_adapters()
    if shipped:
        return shipped
    root = tmp_path_factory.mktemp("adapters")
    return [(name, make_peft_adapter(embedded_model, root / name, seed=seed))
            for seed, name in enumerate(("random-a", "random-b"), start=1)]


@pytest.fixture(scope="module")
def server(adapters, tmp_path_factory: pytest.TempPathFactory):
    config = ServeConfig(
        port=free_port(), api_key=API_KEY, adapters=adapters, adapters_dir=None,
        max_model_len=512, allow_runtime_lora=True,
        log_path=tmp_path_factory.mktemp("logs") / "vllm.log",
    )
    with VLLMServer(config) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.api_base, api_key=API_KEY, max_retries=0)


#: A question from each assistant's domain: an adapter must change its own assistant's answers.
TASK_PROMPTS = {
    "math": [{"role": "user", "content": "Natalia sold clips to 48 of her friends in April, and "
              "then she sold half as many clips in May. How many clips did Natalia sell "
              "altogether in April and May?"}],
    "counselling": [{"role": "user", "content": "I feel anxious all the time and I can't sleep "
                     "before exams. What should I do?"}],
}


def _greedy(client, model: str, max_tokens: int = 24, messages: list | None = None) -> str:
    reply = client.chat.completions.create(model=model, messages=messages or PROMPT,
                                           max_tokens=max_tokens, temperature=0)
    return reply.choices[0].message.content


@pytest.mark.slow
def test_models_lists_base_and_every_adapter(client, server, adapters) -> None:
    listed = {card.id for card in client.models.list().data}
    assert listed == {"smollm2-135m-instruct", *(name for name, _ in adapters)}
    assert set(server.served_models) == listed


@pytest.mark.slow
def test_chat_and_streaming_for_every_model(client, server) -> None:
    for model in server.served_models:
        assert _greedy(client, model, max_tokens=6).strip(), model
        stream = client.chat.completions.create(model=model, messages=PROMPT, max_tokens=6,
                                                temperature=0, stream=True)
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        assert "".join(pieces).strip(), model


@pytest.mark.slow
def test_adapter_changes_the_greedy_output(client, server) -> None:
    for adapter in server.adapters:
        messages = TASK_PROMPTS.get(adapter.name.split("-")[0], PROMPT)
        base = _greedy(client, server.base_name, max_tokens=48, messages=messages)
        assert _greedy(client, adapter.name, max_tokens=48, messages=messages) != base, adapter.name


def _prompt_logprobs(client, model: str, prompt_ids: list[int]) -> list[float]:
    """vLLM's log-probability of each prompt token after the first, given those before."""
    reply = client.completions.create(model=model, prompt=prompt_ids, max_tokens=1,
                                      temperature=0, extra_body={"prompt_logprobs": 0})
    scored = reply.choices[0].model_extra["prompt_logprobs"][1:]
    return [entry[str(token)]["logprob"] for entry, token in zip(scored, prompt_ids[1:],
                                                                  strict=True)]


@pytest.mark.slow
def test_base_model_is_unchanged_next_to_adapter_requests(client, server) -> None:
    """A base-model request computed in the same batches as requests for every adapter
    scores its prompt as it does alone (vLLM's own CPU LoRA ops add the last slot's adapter
    to it: serve/lora_cpu.py). Prompt log-probabilities, not greedy text: a batch of
    another size may round differently in bf16 and flip a near-tie, far less than an adapter."""
    from concurrent.futures import ThreadPoolExecutor

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(server.model_path)
    text = tokenizer.apply_chat_template(TASK_PROMPTS["counselling"] + [
        {"role": "assistant", "content": "It sounds exhausting to carry that worry every night. "
         "Exams can feel huge; breaking revision into small steps often helps."}],
        tokenize=False)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    alone = _prompt_logprobs(client, server.base_name, prompt_ids)
    names = [adapter.name for adapter in server.adapters] * 2
    with ThreadPoolExecutor(len(names) + 1) as pool:
        busy = [pool.submit(_greedy, client, name, 96, TASK_PROMPTS["counselling"])
                for name in names]
        time.sleep(0.5)  # the adapters' requests are decoding when the base one arrives
        beside_adapters = _prompt_logprobs(client, server.base_name, prompt_ids)
        assert all(future.result() for future in busy)
    drift = max(abs(a - b) for a, b in zip(alone, beside_adapters, strict=True))
    assert drift < 0.1, f"base model's prompt log-probabilities moved by up to {drift:.3f}"
    assert "Using PunicaWrapperQtune" in server.log_path.read_text()


@pytest.mark.slow
def test_vllm_adapter_output_matches_transformers_peft(client, server) -> None:
    """Faithful serving: vLLM's greedy tokens for an adapter = transformers + PEFT's, computed
    in the same dtype."""
    import torch

    adapter = server.adapters[0]
    prompt_ids = chat_prompt_ids(server.model_path, PROMPT)
    served_ids = served_greedy_ids(client, adapter.name, prompt_ids, max_tokens=32)
    torch.set_num_threads(1)
    reference_ids = peft_greedy_ids(server.model_path, adapter.path, prompt_ids, 32, server.dtype)
    assert served_ids == reference_ids[: len(served_ids)]
    assert len(served_ids) == len(reference_ids)


@pytest.mark.slow
def test_bad_requests_get_clean_errors_and_the_server_stays_up(client, server) -> None:
    import httpx
    import openai

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=PROMPT, max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=server.base_name, prompt="word " * 600, max_tokens=4)
    response = httpx.post(f"{server.api_base}/chat/completions", content=b"{not json",
                          headers={"Authorization": f"Bearer {API_KEY}",
                                   "Content-Type": "application/json"})
    assert response.status_code in (400, 422)
    for key in (None, "wrong-key"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.get(f"{server.api_base}/models", headers=headers)
        assert response.status_code == 401, key
    assert server.healthy()
    assert _greedy(client, server.base_name, max_tokens=4)


@pytest.mark.slow
def test_the_key_guards_every_route(server) -> None:
    """With a key set, every route in the server's OpenAPI schema but /health answers 401
    without it (SageMaker's /invocations, /tokenize, the runtime adapter routes too)."""
    import httpx

    root = server.api_base.removesuffix("/v1")
    with_key = {"Authorization": f"Bearer {API_KEY}"}
    schema = httpx.get(f"{root}/openapi.json", headers=with_key, timeout=30).json()
    routes = [(method.upper(), path) for path, methods in schema["paths"].items()
              for method in methods if path != "/health"]
    routes += [("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json")]
    assert {"/invocations", "/tokenize", "/v1/load_lora_adapter"} <= {p for _, p in routes}
    open_routes = []
    for method, path in routes:
        url = root + re.sub(r"\{[^}]+\}", "math-qwth", path)
        answer = httpx.request(method, url, json={"model": server.base_name}, timeout=60,
                               headers={"X-Amzn-SageMaker-Adapter-Identifier": "math-qwth"})
        if answer.status_code != 401:
            open_routes.append((method, path, answer.status_code))
    assert open_routes == []
    assert httpx.get(f"{root}/health", timeout=30).status_code == 200
    assert httpx.post(f"{root}/tokenize", json={"model": server.base_name, "prompt": "hi"},
                      headers=with_key, timeout=30).status_code == 200
    # The key travels in the environment: no process shows it on its command line.
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert API_KEY.encode() not in cmdline.read_bytes(), cmdline
        except OSError:
            continue  # a process that ended meanwhile


@pytest.mark.slow
def test_runtime_adapter_load_and_unload(client, server, capsys) -> None:
    from qtune.cli import main

    common = ["adapters", "--api-base", server.api_base, "--api-key", API_KEY]
    source = server.adapters[0].path
    assert main([*common, "load", "runtime-copy", str(source)]) == 0
    assert "runtime-copy" in {card.id for card in client.models.list().data}
    assert _greedy(client, "runtime-copy") == _greedy(client, server.adapters[0].name)
    assert main([*common, "list"]) == 0
    assert "runtime-copy\tadapter of" in capsys.readouterr().out
    assert main([*common, "unload", "runtime-copy"]) == 0
    assert "runtime-copy" not in {card.id for card in client.models.list().data}
    assert main([*common, "load", "broken", str(source.parent / "does-not-exist")]) == 2
    assert "does-not-exist" in capsys.readouterr().err


@pytest.mark.slow
def test_stop_leaves_no_engine_process(server) -> None:
    """Runs last in this module: stopping kills the API server and its engine processes."""
    pgid = server.process.pid
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert not server.healthy()


@pytest.mark.slow
def test_failed_start_raises_with_the_log_tail(tmp_path: Path) -> None:
    config = ServeConfig(port=free_port(), adapters_dir=None, log_path=tmp_path / "vllm.log",
                         extra_args=["--no-such-vllm-flag"], startup_timeout=300)
    with pytest.raises(QtuneError, match=r"(?s)vLLM exited with status .*no-such-vllm-flag"):
        VLLMServer(config).start()
