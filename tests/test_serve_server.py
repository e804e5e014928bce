"""`qtune serve`: the vLLM command line (fast) and one real server (slow).

The slow tests share one module-scoped vLLM server running the real embedded model with
the four shipped adapters (or, before they exist, two random PEFT adapters built on the
real model), an API key and runtime adapter loading, and talk to it with the official
``openai`` client.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest
from qtune.serve.server import ServeConfig, VLLMServer, threads_bind
from serve_fixtures import (
    SMALL_LLAMA,
    make_peft_adapter,
    write_fake_adapter,
    write_small_model_config,
)

from qtune.adapter_format import weights_version
from qtune.config import settings
from qtune.errors import QtuneError

SHIPPED = ("math-qwth", "math-lora", "counselling-qwth", "counselling-lora")
API_KEY = "qtune-test-key"
PROMPT = [{"role": "user", "content": "What is 12 times 7? Answer briefly."}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----- command line, no server ----------------------------------------------------------
@pytest.fixture()
def small_model(tmp_path: Path) -> Path:
    return write_small_model_config(tmp_path / "model")


def test_a_scanned_folder_serves_only_the_adapters_of_the_served_base(
        tmp_path: Path, small_model: Path) -> None:
    """`qtune serve --model OTHER` beside adapters/ of the embedded model starts with the
    adapters of OTHER only; an adapter named with --adapter is still refused."""
    write_fake_adapter(tmp_path / "ads" / "mine", SMALL_LLAMA, base_model_name_or_path="model")
    theirs = write_fake_adapter(tmp_path / "ads" / "theirs", SMALL_LLAMA,
                                base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    server = VLLMServer(ServeConfig(model=str(small_model), adapters_dir=tmp_path / "ads"))
    assert [a.name for a in server.adapters] == ["mine"]
    assert server.skipped == []
    with pytest.raises(QtuneError, match="trained on 'HuggingFaceTB/SmolLM2-135M-Instruct'"):
        VLLMServer(ServeConfig(model=str(small_model), adapters_dir=None,
                               adapters=[("theirs", theirs)]))
    ignoring = VLLMServer(ServeConfig(model=str(small_model), adapters_dir=tmp_path / "ads",
                                      ignore_base_name=True))
    assert sorted(a.name for a in ignoring.adapters) == ["mine", "theirs"]


def test_command_with_adapters(tmp_path: Path, small_model: Path) -> None:
    write_fake_adapter(tmp_path / "ads" / "alpha", SMALL_LLAMA, r=8)
    beta = write_fake_adapter(tmp_path / "beta", SMALL_LLAMA, r=16, targets=("o_proj",))
    config = ServeConfig(model=str(small_model), port=8123, adapters_dir=tmp_path / "ads",
                         adapters=[("beta", beta)], api_key="secret",
                         extra_args=["--tensor-parallel-size", "2"])
    server = VLLMServer(config)
    argv = server.command()
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == str(small_model.resolve())
    assert argv[argv.index("--served-model-name") + 1] == "model"
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "--enable-lora" in argv
    assert argv[argv.index("--max-loras") + 1] == "2"
    assert argv[argv.index("--max-lora-rank") + 1] == "16"
    modules = argv[argv.index("--lora-modules") + 1: argv.index("--lora-modules") + 3]
    # vLLM reads a snapshot named by each adapter's weights version (staged at start).
    assert [a.path for a in server.adapters] == [(tmp_path / "ads" / "alpha").resolve(),
                                                 beta.resolve()]
    assert modules == [f"{a.name}={server.served_path(a)}" for a in server.adapters]
    assert [Path(m.partition("=")[2]).name for m in modules] == [
        f"{a.name}@{weights_version(a.path)}" for a in server.adapters]
    # LoRA only on the vLLM layers the adapters adapt (q,k -> qkv_proj; beta: o_proj).
    targets = argv[argv.index("--lora-target-modules") + 1: argv.index("--lora-target-modules") + 3]
    assert targets == ["o_proj", "qkv_proj"]
    assert argv[-2:] == ["--tensor-parallel-size", "2"]
    assert "secret" not in " ".join(argv)  # the key travels in the environment
    env = server.environment()
    assert env["VLLM_API_KEY"] == "secret"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in env or os.environ.get(
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING")
    assert server.served_models == ["model", "alpha", "beta"]
    assert server.api_base == "http://127.0.0.1:8123/v1"


def test_dtype_follows_the_hardware_unless_given(small_model: Path, monkeypatch) -> None:
    from qtune import hardware

    def dtype_of(argv: list[str]) -> list[str]:
        return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--dtype"]

    config = ServeConfig(model=str(small_model), adapters_dir=None)
    monkeypatch.setattr(hardware, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert dtype_of(VLLMServer(config).command()) == ["float32"]
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert dtype_of(VLLMServer(config).command()) == ["auto"]
    config.extra_args = ["--dtype=bfloat16"]
    assert dtype_of(VLLMServer(config).command()) == []  # the user's choice wins
    assert VLLMServer(ServeConfig(model=str(small_model), adapters_dir=None,
                                  dtype="float16")).dtype == "float16"


def test_small_machines_give_the_engine_every_core(small_model: Path, monkeypatch) -> None:
    assert threads_bind("auto", [0, 1]) == "0,1"
    assert threads_bind("auto", [3, 1, 2, 0]) == "0,1,2,3"
    assert threads_bind("auto", list(range(16))) == "auto"  # vLLM reserves one core
    assert threads_bind("0-6", [0, 1]) == "0-6"  # the user's list wins
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    env = VLLMServer(ServeConfig(model=str(small_model), adapters_dir=None)).environment()
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == threads_bind("auto")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # so does the environment's
    env = VLLMServer(ServeConfig(model=str(small_model), adapters_dir=None)).environment()
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"


def test_command_without_adapters_has_no_lora(small_model: Path) -> None:
    server = VLLMServer(ServeConfig(model=str(small_model), adapters_dir=None, api_key=None))
    assert "--enable-lora" not in server.command()
    assert "VLLM_API_KEY" not in server.environment()


def test_runtime_lora_enables_lora_with_room_for_rank_64(small_model: Path) -> None:
    config = ServeConfig(model=str(small_model), adapters_dir=None, allow_runtime_lora=True)
    server = VLLMServer(config)
    argv = server.command()
    assert argv[argv.index("--max-lora-rank") + 1] == "64"
    assert server.environment()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # An adapter loaded later may adapt any layer: LoRA stays on every layer.
    assert "--lora-target-modules" not in argv


def test_broken_adapter_blocks_start_unless_skipped(tmp_path: Path, small_model: Path) -> None:
    write_fake_adapter(tmp_path / "ads" / "good", SMALL_LLAMA)
    write_fake_adapter(tmp_path / "ads" / "wrong-base", {**SMALL_LLAMA, "hidden_size": 32})
    config = ServeConfig(model=str(small_model), adapters_dir=tmp_path / "ads")
    with pytest.raises(QtuneError, match="'wrong-base'.*another base model"):
        VLLMServer(config)
    config.skip_broken_adapters = True
    server = VLLMServer(config)
    assert server.served_models == ["model", "good"]
    assert "wrong-base" in server.skipped[0]


def test_port_in_use_is_reported(small_model: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = VLLMServer(ServeConfig(model=str(small_model), port=port, adapters_dir=None))
        with pytest.raises(QtuneError, match=f"port {port} is already in use"):
            server.start()


def test_serve_arguments_build_the_config(tmp_path: Path) -> None:
    from qtune.serve.cli import config_from_args

    from qtune.cli import build_parser

    args = build_parser().parse_args([
        "serve", "--port", "8055", "--host", "0.0.0.0", "--api-key", "k", "--adapter",
        f"one={tmp_path}", "--allow-runtime-lora", "--", "--tensor-parallel-size", "2"])
    config = config_from_args(args)
    assert (config.port, config.host, config.api_key) == (8055, "0.0.0.0", "k")
    assert config.adapters == [("one", tmp_path)] and config.adapters_dir is None
    assert config.allow_runtime_lora and config.extra_args == ["--tensor-parallel-size", "2"]
    default = config_from_args(build_parser().parse_args(["serve"]))
    assert default.adapters_dir == settings().adapters_dir and default.host == "127.0.0.1"


def test_serve_command_reports_a_busy_port(small_model: Path, capsys) -> None:
    from qtune.cli import main

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        status = main(["serve", "--model", str(small_model), "--no-adapters", "--port", str(port)])
    assert status == 2
    assert f"port {port} is already in use" in capsys.readouterr().err


def test_adapters_command_without_a_server_says_so(capsys) -> None:
    from qtune.cli import main

    status = main(["adapters", "--api-base", f"http://127.0.0.1:{_free_port()}/v1", "list"])
    assert status == 2
    assert "no server answers" in capsys.readouterr().err


# ----- one real server ------------------------------------------------------------------
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
        port=_free_port(), api_key=API_KEY, adapters=adapters, adapters_dir=None,
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
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = server.adapters[0]
    tokenizer = AutoTokenizer.from_pretrained(server.model_path)
    text = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]

    reply = client.completions.create(model=adapter.name, prompt=prompt_ids, max_tokens=32,
                                      temperature=0, extra_body={"return_token_ids": True})
    served_ids = list(reply.choices[0].model_extra["token_ids"])

    torch.set_num_threads(1)
    dtype = torch.float32 if server.dtype == "float32" else torch.bfloat16  # as vLLM computes
    base = AutoModelForCausalLM.from_pretrained(server.model_path, dtype=dtype)
    model = PeftModel.from_pretrained(base, str(adapter.path)).eval()
    with torch.no_grad():
        output = model.generate(torch.tensor([prompt_ids]), max_new_tokens=32, do_sample=False,
                                pad_token_id=tokenizer.eos_token_id)
    reference_ids = output[0, len(prompt_ids):].tolist()
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


def test_the_guard_is_importable_by_its_middleware_path(small_model: Path) -> None:
    import importlib

    argv = VLLMServer(ServeConfig(model=str(small_model), adapters_dir=None,
                                  api_key="k")).command()
    paths = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--middleware"]
    # vLLM adds them in order and the last added runs first: the key check comes first.
    names = [getattr(importlib.import_module(module), name).__name__
             for module, _, name in (path.rpartition(".") for path in paths)]
    assert names == ["ServeGuard", "GuardEveryRoute"]
    no_key = VLLMServer(ServeConfig(model=str(small_model), adapters_dir=None, api_key=None))
    argv = no_key.command()
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--middleware"] == [paths[0]]


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
    config = ServeConfig(port=_free_port(), adapters_dir=None, log_path=tmp_path / "vllm.log",
                         extra_args=["--no-such-vllm-flag"], startup_timeout=300)
    with pytest.raises(QtuneError, match=r"(?s)vLLM exited with status .*no-such-vllm-flag"):
        VLLMServer(config).start()


def test_the_recorded_assistant_decides_screening_and_the_system_prompt(
        tmp_path: Path, small_model: Path, monkeypatch) -> None:
    """An adapter of one's own is screened when its recorded assistant asks for it, and its
    recorded system prompt reaches the guard unless --no-adapter-prompts."""
    import json

    from qtune.serve.cli import config_from_args
    from qtune.serve.guard import ServeGuard
    from qtune.serve.server import ADAPTER_PROMPTS_ENV, SCREENED_MODELS_ENV, screens_adapter

    from qtune.cli import build_parser

    helpline = write_fake_adapter(tmp_path / "ads" / "helpline-lora", SMALL_LLAMA)
    (helpline / "metrics.json").write_text(json.dumps({"assistant": {
        "name": "helpline", "title": "Helpline", "system_prompt": "Listen first.",
        "crisis_screen": True}}))
    write_fake_adapter(tmp_path / "ads" / "notes-lora", SMALL_LLAMA)
    server = VLLMServer(ServeConfig(model=str(small_model), adapters_dir=tmp_path / "ads"))
    assert server.screened_models() == ["helpline-lora"]
    env = server.guard_environment()
    assert json.loads(env[ADAPTER_PROMPTS_ENV]) == {"helpline-lora": "Listen first."}
    assert screens_adapter("off", helpline, "helpline-lora") is False
    assert screens_adapter("all", tmp_path / "ads" / "notes-lora", "notes-lora") is True
    args = build_parser().parse_args(["serve", "--model", str(small_model), "--adapters",
                                      str(tmp_path / "ads"), "--no-adapter-prompts"])
    quiet = VLLMServer(config_from_args(args))
    assert json.loads(quiet.guard_environment()[ADAPTER_PROMPTS_ENV]) is None
    for variables, prompts in ((env, {"helpline-lora": "Listen first."}),
                               (quiet.guard_environment(), None)):
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv(SCREENED_MODELS_ENV, "[]")  # no classifier warm-up here
        assert ServeGuard(app=None).prompts == prompts
