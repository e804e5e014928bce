"""LoRA-XS: a trainable r×r matrix between frozen factors from the SVD of each adapted
weight (finetune/lora_xs.py); exported exactly as a rank-r PEFT LoRA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qtune.finetune.methods.base import AdapterConfig, AdapterMethod, SavedAdapter

from qtune import adapter_format as fmt

COMPACT_DIR = "lora_xs"
WEIGHTS_FILE = "lora_xs_R.safetensors"


@dataclass
class LoRAXSConfig(AdapterConfig):
    """LoRA-XS: r² trainable parameters per layer (A and B frozen from W's SVD)."""


class LoRAXSMethod(AdapterMethod):
    name = "lora-xs"
    label = "LoRA-XS"
    summary = "LoRA-XS: a trainable r x r matrix between frozen SVD factors of each weight"
    config_class = LoRAXSConfig
    default_lr = 1e-2
    default_lr_source = "tuned: docs/study-frontier.md, ranks 8 and 16 on both assistants, 27 on math"
    compact_note = (f"the `{COMPACT_DIR}/` folder (the r x r matrices; the frozen factors are "
                    "the SVD of the base weights, recomputed on load)")

    def wrap(self, base, config: LoRAXSConfig):
        from qtune.finetune.lora_xs import LoRAXSModel

        return LoRAXSModel(base, config)

    def save(self, model, folder: Path, base_name: str) -> SavedAdapter:
        from qtune.finetune.lora_export import write_lora_folder
        from safetensors.torch import save_file

        compact = folder / COMPACT_DIR
        compact.mkdir(parents=True, exist_ok=True)
        fmt.write_json(compact / "config.json", model.config.to_dict())
        save_file(model.compact_state_dict(), str(compact / WEIGHTS_FILE))
        write_lora_folder(folder, model.lora_factors(), model.config.r, model.config.lora_alpha,
                          model.config.target_modules, base_name)
        return SavedAdapter(f"{COMPACT_DIR}/", fmt.folder_bytes(compact))

    def load(self, base, folder: Path):
        import json

        from qtune.finetune.lora_xs import LoRAXSModel
        from safetensors.torch import load_file

        compact = folder / COMPACT_DIR
        config = LoRAXSConfig.from_dict(json.loads((compact / "config.json").read_text()))
        model = LoRAXSModel(base, config)
        model.load_trainable(load_file(str(compact / WEIGHTS_FILE)), compact)
        return model

    def describe(self, config: LoRAXSConfig) -> str:
        return (f"LoRA-XS of rank {config.r} (alpha {config.lora_alpha:g}) on "
                f"{', '.join(config.target_modules)}: each adapted weight W keeps frozen factors "
                "from its own truncated SVD (U_r S_r and V_r^T) and trains only an r x r matrix "
                "between them; exported exactly as a PEFT LoRA of the same rank.")


METHOD = LoRAXSMethod()
