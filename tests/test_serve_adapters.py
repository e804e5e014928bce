"""Adapter checks before launch (fast: header-only fake adapters, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qtune.serve.adapters import (
    BaseShapes,
    discover_adapters,
    validate_adapter,
    validate_all,
    vllm_max_lora_rank,
)
from serve_fixtures import SMALL_LLAMA, write_fake_adapter

from qtune.errors import QtuneError

BASE = BaseShapes.from_config(SMALL_LLAMA)
OTHER_BASE = {**SMALL_LLAMA, "hidden_size": 96, "intermediate_size": 192, "head_dim": 24}


def test_good_adapter_passes(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "good", SMALL_LLAMA, r=4,
                                targets=("q_proj", "k_proj", "down_proj"))
    info = validate_adapter("good", folder, BASE)
    assert info.rank == 4
    assert info.target_modules == ("down_proj", "k_proj", "q_proj")


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "half", SMALL_LLAMA)
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(QtuneError, match=r"adapter 'half'.*adapter_model.safetensors is missing"):
        validate_adapter("half", folder, BASE)


def test_missing_config_is_named(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "noconf", SMALL_LLAMA)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(QtuneError, match="adapter_config.json is missing"):
        validate_adapter("noconf", folder, BASE)


def test_unreadable_json(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "badjson", SMALL_LLAMA)
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(QtuneError, match="not valid JSON"):
        validate_adapter("badjson", folder, BASE)


@pytest.mark.parametrize("rank", [0, -2, "8", 1024])
def test_bad_rank(tmp_path: Path, rank: object) -> None:
    folder = write_fake_adapter(tmp_path / "rank", SMALL_LLAMA)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["r"] = rank
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(QtuneError, match="rank"):
        validate_adapter("rank", folder, BASE)


def test_modules_to_save_is_refused(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "mts", SMALL_LLAMA, modules_to_save=["lm_head"])
    with pytest.raises(QtuneError, match="modules_to_save"):
        validate_adapter("mts", folder, BASE)


def test_not_lora_is_refused(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "ia3", SMALL_LLAMA, peft_type="IA3")
    with pytest.raises(QtuneError, match="LORA"):
        validate_adapter("ia3", folder, BASE)


def test_adapter_for_another_base_model(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "other", OTHER_BASE)
    with pytest.raises(QtuneError, match="exported for another base model"):
        validate_adapter("other", folder, BASE)


def test_too_many_layers_is_another_base_model(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "deeper", {**SMALL_LLAMA, "num_hidden_layers": 3})
    with pytest.raises(QtuneError, match="layer 2 but the base model has 2 layers"):
        validate_adapter("deeper", folder, BASE)


def test_corrupt_safetensors(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "corrupt", SMALL_LLAMA)
    (folder / "adapter_model.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(QtuneError, match="not a readable safetensors"):
        validate_adapter("corrupt", folder, BASE)


def test_skip_broken_keeps_the_good_ones(tmp_path: Path) -> None:
    write_fake_adapter(tmp_path / "a-good", SMALL_LLAMA, r=16)
    write_fake_adapter(tmp_path / "b-bad", SMALL_LLAMA, modules_to_save=["lm_head"])
    (tmp_path / "notes").mkdir()  # not an adapter: ignored
    found = discover_adapters(tmp_path)
    assert [name for name, _ in found] == ["a-good", "b-bad"]
    with pytest.raises(QtuneError, match=r"(?s)'b-bad'.*--skip-broken-adapters"):
        validate_all(found, BASE, "base")
    good, problems = validate_all(found, BASE, "base", skip_broken=True)
    assert [a.name for a in good] == ["a-good"]
    assert len(problems) == 1 and "b-bad" in problems[0]


def test_names_must_be_unique_and_not_the_base(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "x", SMALL_LLAMA)
    with pytest.raises(QtuneError, match="named 'x'"):
        validate_all([("x", folder), ("x", folder)], BASE, "base")
    with pytest.raises(QtuneError, match="base model's served name"):
        validate_all([("base", folder)], BASE, "base")


def test_max_lora_rank_rounds_up_to_vllm_values() -> None:
    assert vllm_max_lora_rank([4]) == 8
    assert vllm_max_lora_rank([8, 16]) == 16
    assert vllm_max_lora_rank([17]) == 32
    assert vllm_max_lora_rank([]) == 1


def test_real_base_model_shapes(embedded_model: Path) -> None:
    shapes = BaseShapes.from_model_dir(embedded_model)
    assert shapes.num_layers == 30
    assert shapes.dims["k_proj"] == (576, 192)
    assert shapes.dims["down_proj"] == (1536, 576)


def test_config_rank_must_match_the_tensors(tmp_path: Path) -> None:
    """r = 8 in the config but rank-128 tensors: refused before vLLM sees it."""
    folder = write_fake_adapter(tmp_path / "liar", SMALL_LLAMA, r=128)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    with pytest.raises(QtuneError, match=r"rank 128 but adapter_config.json declares r=8"):
        validate_adapter("liar", folder, BASE)


def test_adapter_for_a_base_of_another_name_is_refused(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "other", SMALL_LLAMA,
                                base_model_name_or_path="meta-llama/Llama-3.2-1B")
    with pytest.raises(QtuneError, match=r"trained on 'meta-llama/Llama-3.2-1B'.*--ignore-base-name"):
        validate_adapter("other", folder, BASE, {"model", "/models/model"})
    assert validate_adapter("other", folder, BASE, None).rank == 8  # the override
    # The same base under its hub id and its local folder name is the same base.
    same = write_fake_adapter(tmp_path / "same", SMALL_LLAMA,
                              base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    names = {"smollm2-135m-instruct", "/root/.cache/qtune/models/smollm2-135m-instruct"}
    assert validate_adapter("same", same, BASE, names).rank == 8


def test_a_model_list_without_root_or_ids_is_an_error_not_a_crash(tmp_path: Path, capsys) -> None:
    """`qtune adapters` against an endpoint whose /v1/models entries lack fields."""
    import http.server
    import threading

    from qtune.cli import main

    bodies = [{"data": [{"id": "base-model"}, {"id": "math-qwth", "parent": "base-model"}]},
              {"data": [{"object": "model"}]}]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            payload = json.dumps(bodies[0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_base = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        assert main(["adapters", "--api-base", api_base, "list"]) == 0
        assert "math-qwth\tadapter of base-model\t" in capsys.readouterr().out
        folder = write_fake_adapter(tmp_path / "evil", SMALL_LLAMA)
        for bad in ("../../etc/evil", "a b", "x$(id)"):
            assert main(["adapters", "--api-base", api_base, "load", bad, str(folder)]) == 2
            assert "must start with a letter or digit" in capsys.readouterr().err
        bodies.pop(0)
        assert main(["adapters", "--api-base", api_base, "list"]) == 2
        assert "did not answer with an OpenAI model list" in capsys.readouterr().err
    finally:
        server.shutdown()
