"""Shared fixtures.

Unit tests use a tiny random-weight Llama built from a config (milliseconds); tests
marked ``slow`` use the real embedded model or a real vLLM server. ``make test`` runs
them all.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"


def _default_data_dir() -> Path:
    env = os.environ.get("QTUNE_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The local copy of the datasets (CI: ../shared/datasets). Tests on real data need it."""
    path = _default_data_dir()
    if not path.is_dir():
        pytest.fail(f"datasets folder {path} not found: set QTUNE_DATA_DIR")
    os.environ["QTUNE_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    """The prepared embedded SmolLM2-135M-Instruct folder (built on first use)."""
    from qtune.model import prepare_embedded

    return prepare_embedded()


@pytest.fixture()
def one_torch_thread(data_dir):
    """Training tests share 2 cores with everything else; data_dir sets QTUNE_DATA_DIR."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def tiny_llama():
    """A 2-layer random Llama with SmolLM2's head layout (GQA), small enough for unit tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model: Path) -> Path:
    """A 2-layer, hidden-32 random Llama saved with the embedded model's tokenizer: the
    real data, prompts and tokenizer run unchanged, a training step takes milliseconds."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(embedded_model / name, folder / name)
    return folder


def export_logits(model, reference, folder, input_ids):
    """(the trained adapter's logits, those of its PEFT LoRA export loaded on ``reference``,
    the base model's): what an exactness test compares."""
    import torch
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(reference, folder).eval()
    with torch.no_grad():
        ours = model(input_ids=input_ids).logits
        theirs = peft_model(input_ids=input_ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=input_ids).logits
    return ours, theirs, base
