"""LoRA, PEFT's own: the baseline every other method is measured against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qtune.finetune.methods.base import AdapterConfig, AdapterMethod, SavedAdapter

from qtune import adapter_format as fmt


@dataclass
class LoRAConfig(AdapterConfig):
    """A plain LoRA: A and B trained directly (PEFT, no dropout, no bias)."""


class LoRAMethod(AdapterMethod):
    name = "lora"
    label = "LoRA"
    summary = "PEFT LoRA: the baseline"
    config_class = LoRAConfig
    default_lr = 3.16e-3
    default_lr_source = "tuned: docs/study.md, both assistants"

    def wrap(self, base, config: LoRAConfig):
        from qtune.finetune.lora import get_lora_model

        return get_lora_model(base, config.r, config.lora_alpha, config.target_modules)

    def save(self, model, folder: Path, base_name: str) -> SavedAdapter:
        from qtune.finetune.lora import save_lora

        save_lora(model, folder, base_name)
        return SavedAdapter(fmt.PEFT_WEIGHTS_FILE,
                            (folder / fmt.PEFT_WEIGHTS_FILE).stat().st_size)

    def load(self, base, folder: Path):
        from peft import PeftModel

        return PeftModel.from_pretrained(base, str(folder))

    def describe(self, config: LoRAConfig) -> str:
        return (f"Plain LoRA (PEFT) of rank {config.r}, alpha {config.lora_alpha:g}, no dropout, "
                f"on {', '.join(config.target_modules)}: the baseline for the other methods "
                "trained with the same data, schedule, steps and seed.")


METHOD = LoRAMethod()
