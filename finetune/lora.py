"""The LoRA baseline: plain PEFT LoRA with the same rank and targets as QWTH.

QWTH generates the LoRA factors A and B from a quantum circuit and tensor-train
cores; the baseline trains A and B directly. Both are saved as a PEFT LoRA folder, so
vLLM serves them the same way and the comparison is only about how the factors were
parameterised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model


def lora_config(r: int, lora_alpha: int, target_modules: Sequence[str]) -> LoraConfig:
    """The LoRA baseline's config: no dropout, so training is deterministic like QWTH's."""
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )


def get_lora_model(
    base_model: torch.nn.Module, r: int, lora_alpha: int, target_modules: Sequence[str]
) -> PeftModel:
    """Wrap ``base_model`` with trainable LoRA factors (kept in fp32 by PEFT)."""
    return get_peft_model(base_model, lora_config(r, lora_alpha, target_modules))


def save_lora(model: PeftModel, folder: Path, base_model_name_or_path: str) -> None:
    """Write the PEFT folder (adapter_config.json + adapter_model.safetensors).

    ``base_model_name_or_path`` is what the adapter records as its base: the Hugging
    Face id for the embedded model, otherwise what the user trained on.
    """
    for config in model.peft_config.values():
        config.base_model_name_or_path = base_model_name_or_path
    # The embeddings are frozen, so there is nothing to save from them; saying so also
    # stops PEFT from looking the base model up on the Hub.
    model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)
