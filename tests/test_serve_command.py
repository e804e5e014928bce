"""`qtune serve`'s vLLM command line, checked without starting a server.

The live server (the real embedded model, its adapters and the official ``openai``
client) is tested in ``test_serve_server.py``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from qtune.serve.server import ServeConfig, VLLMServer, threads_bind
from serve_fixtures import SMALL_LLAMA, write_fake_adapter, write_small_model_config
from ui_fixtures import free_port

from qtune.adapter_format import weights_version
from qtune.config import settings
from qtune.errors import QtuneError


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

    status = main(["adapters", "--api-base", f"http://127.0.0.1:{free_port()}/v1", "list"])
    assert status == 2
    assert "no server answers" in capsys.readouterr().err


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
