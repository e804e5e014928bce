"""VeRA (Kopiczko et al., 2024), PEFT's implementation: one pair of frozen random matrices
A (r × in) and B (out × r) shared by every adapted layer, and per layer two trainable
scaling vectors, so the update is diag(λ_b)·B·diag(λ_d)·A (r + out parameters per layer).
That is a rank-r product, so it exports exactly to a PEFT LoRA: lora_A = diag(λ_d)·A,
lora_B = diag(λ_b)·B, alpha = r (VeRA has no other scale)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qtune.finetune.methods.base import AdapterConfig, AdapterMethod, SavedAdapter

from qtune import adapter_format as fmt

COMPACT_DIR = "vera"


@dataclass
class VeRAConfig(AdapterConfig):
    """VeRA's settings: its rank is the shared random matrices' (large: they are not trained)."""

    r: int = 256
    """Rank of the exported LoRA (every method)."""
    d_initial: float = 0.1
    """VeRA: initial value of every λ_d (λ_b starts at zero, so the update does)."""
    projection_seed: int = 0
    """VeRA: seed of the shared frozen random matrices A and B."""


class VeRAMethod(AdapterMethod):
    name = "vera"
    label = "VeRA"
    summary = "VeRA (PEFT): trainable scaling vectors around shared frozen random matrices"
    config_class = VeRAConfig
    default_lr = 1e-1
    default_lr_source = "tuned: docs/study-frontier.md, both assistants, rank 256"
    compact_note = (f"the `{COMPACT_DIR}/` folder (PEFT's VeRA form with its projections; "
                    "`PeftModel.from_pretrained` loads it)")

    def validate(self, config: VeRAConfig) -> None:
        config.validate()
        if config.lora_alpha != AdapterConfig.lora_alpha:
            from qtune.errors import QtuneError

            raise QtuneError("VeRA has no alpha (its update is not scaled): leave lora_alpha "
                             "at its default")

    def wrap(self, base, config: VeRAConfig):
        from peft import VeraConfig, get_peft_model

        return get_peft_model(base, VeraConfig(
            r=config.r, target_modules=list(config.target_modules), vera_dropout=0.0,
            d_initial=config.d_initial, projection_prng_key=config.projection_seed,
            save_projection=True, task_type="CAUSAL_LM"))

    def save(self, model, folder: Path, base_name: str) -> SavedAdapter:
        from qtune.finetune.lora_export import write_lora_folder

        for peft_config in model.peft_config.values():
            peft_config.base_model_name_or_path = base_name
        compact = folder / COMPACT_DIR
        model.save_pretrained(str(compact), safe_serialization=True, save_embedding_layers=False)
        (compact / "README.md").unlink(missing_ok=True)  # PEFT's stub; the run's card is above
        rank = next(iter(model.peft_config.values())).r
        write_lora_folder(folder, lora_factors(model), rank, rank,
                          model.peft_config["default"].target_modules, base_name)
        return SavedAdapter(f"{COMPACT_DIR}/", fmt.folder_bytes(compact))

    def load(self, base, folder: Path):
        from peft import PeftModel

        return PeftModel.from_pretrained(base, str(folder / COMPACT_DIR))

    def describe(self, config: VeRAConfig) -> str:
        return (f"VeRA (PEFT) of rank {config.r} on {', '.join(config.target_modules)}: frozen "
                "random matrices shared by every adapted layer, scaled by two trainable vectors "
                "per layer; exported exactly as a PEFT LoRA of the same rank.")


def lora_factors(model) -> dict:
    """(A, B) of the exported LoRA for every VeRA layer, named as in the base model."""
    from peft.tuners.vera.layer import Linear as VeraLinear

    factors = {}
    for name, module in model.named_modules():
        if not isinstance(module, VeraLinear):
            continue
        adapter = module.active_adapters[0]
        a = module.vera_A[adapter][:, : module.in_features].float()
        b = module.vera_B[adapter][: module.out_features, :].float()
        lambda_d = module.vera_lambda_d[adapter].float().unsqueeze(-1)
        lambda_b = module.vera_lambda_b[adapter].float().unsqueeze(-1)
        factors[name.removeprefix("base_model.model.")] = (lambda_d * a, lambda_b * b)
    return factors


METHOD = VeRAMethod()
