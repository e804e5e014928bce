"""The four adapters committed in adapters/: complete, servable, exact, and as small as claimed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from qtune.config import DEFAULT_BASE_MODEL_HF_ID

ADAPTERS = Path(__file__).resolve().parent.parent / "adapters"
SHIPPED = ("math-qwth", "math-lora", "counselling-qwth", "counselling-lora")
QWTH = [name for name in SHIPPED if name.endswith("qwth")]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_adapter_is_a_complete_peft_lora(name: str, embedded_model: Path) -> None:
    from qtune.serve.adapters import BaseShapes, validate_adapter

    folder = ADAPTERS / name
    for file in ("adapter_config.json", "adapter_model.safetensors", "README.md", "log.csv",
                 "loss.png", "metrics.json", "training_config.json"):
        assert (folder / file).is_file(), f"{name}: {file} missing"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == DEFAULT_BASE_MODEL_HF_ID
    assert not config.get("modules_to_save")
    assert config["r"] in (8, 16, 32, 64)
    # the checks `qtune serve` runs before launching vLLM
    validate_adapter(name, folder, BaseShapes.from_model_dir(embedded_model))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["final_eval_loss"] < metrics["initial_eval_loss"], name


@pytest.mark.parametrize("name", QWTH)
def test_shipped_qwth_export_equals_its_compact_form(name: str, embedded_model: Path) -> None:
    """adapter_model.safetensors is exactly what the committed cores and angles generate."""
    from qtune.finetune.qwth import load_compact
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(embedded_model, dtype=torch.float32)
    model = load_compact(base, ADAPTERS / name / "qwth")
    exported = load_file(str(ADAPTERS / name / "adapter_model.safetensors"))
    factors = model.lora_factors()
    assert len(exported) == 2 * len(factors)
    for module, (a, b) in factors.items():
        torch.testing.assert_close(exported[f"base_model.model.{module}.lora_A.weight"], a,
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(exported[f"base_model.model.{module}.lora_B.weight"], b,
                                   rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", QWTH)
def test_shipped_qwth_card_states_under_a_quarter_of_lora(name: str) -> None:
    card = (ADAPTERS / name / "README.md").read_text()
    found = re.search(r"Trainable parameters: ([\d,]+); a rank-8 LoRA on the same layers has "
                      r"([\d,]+) \(([\d.]+)% of it\)", card)
    assert found, "the card does not state the parameter counts"
    qwth, lora, percent = (float(found.group(i).replace(",", "")) for i in (1, 2, 3))
    assert qwth / lora <= 0.24
    assert percent == pytest.approx(100 * qwth / lora, abs=1e-3)
    metrics = json.loads((ADAPTERS / name / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == qwth
