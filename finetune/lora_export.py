"""Writing any adapter whose update is a product B·A as an ordinary PEFT LoRA folder, the
form vLLM serves: QWTH, VeRA and LoRA-XS export through here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from qtune.finetune.wrapped import matches_target

from qtune.adapter_format import PEFT_WEIGHTS_FILE


def export_targets(adapted: Iterable[str], configured: Iterable[str]) -> list[str]:
    """Suffix names when the config used plain names (as PEFT and vLLM expect), else the
    full paths of the adapted modules."""
    adapted = list(adapted)
    if all("." not in target for target in configured):
        return sorted({name.rsplit(".", 1)[-1] for name in adapted})
    return sorted(adapted)


def write_lora_folder(folder: Path, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                      rank: int, alpha: float, configured_targets: Iterable[str],
                      base_model_name_or_path: str) -> Path:
    """``factors``: for each adapted module (its name in the base model), (A, B) with
    A of shape (rank, in) and B of shape (out, rank), so that the update is
    (alpha / rank) · B·A, PEFT's LoRA forward exactly."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    targets = export_targets(factors, configured_targets)
    # Every adapted module must be matched by the exported targets, and no other one.
    assert all(matches_target(name, targets) for name in factors)
    LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none",
        fan_in_fan_out=False, use_rslora=False, modules_to_save=None, task_type="CAUSAL_LM",
        inference_mode=True, base_model_name_or_path=base_model_name_or_path,
    ).save_pretrained(str(folder))
    tensors = {}
    for name, (a, b) in factors.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.detach().float().cpu().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.detach().float().cpu().contiguous()
    save_file(tensors, str(folder / PEFT_WEIGHTS_FILE), metadata={"format": "pt"})
    return folder
