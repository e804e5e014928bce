"""QWTH, the quantum-weighted tensor hybrid: tensor-train cores generate the LoRA factors,
one parameterised circuit weights their bonds (finetune/qwth/, docs/method.md)."""

from __future__ import annotations

from pathlib import Path

from qtune.finetune.methods.base import AdapterMethod, SavedAdapter
from qtune.finetune.qwth.config import QWTHConfig

from qtune import adapter_format as fmt


class QWTHMethod(AdapterMethod):
    name = "qwth"
    label = "QWTH"
    summary = "quantum-weighted tensor hybrid: circuit + tensor-train cores, exported as a LoRA"
    config_class = QWTHConfig
    default_lr = 1e-2
    default_lr_source = "tuned: docs/study.md, both assistants"
    compact_note = (f"the `{fmt.QWTH_DIR}/` folder (cores + circuit angles; "
                   "`qtune.finetune.qwth.load_compact` rebuilds the adapter)")

    def validate(self, config: QWTHConfig) -> None:
        config.validate(check_device=True)

    def wrap(self, base, config: QWTHConfig):
        from qtune.finetune.qwth import get_qwth_model

        return get_qwth_model(base, config)

    def save(self, model, folder: Path, base_name: str) -> SavedAdapter:
        from qtune.finetune.qwth import export_peft, save_compact

        compact = save_compact(model, folder / fmt.QWTH_DIR, base_name)
        export_peft(model, folder, base_name)
        return SavedAdapter(f"{fmt.QWTH_DIR}/", fmt.folder_bytes(compact))

    def load(self, base, folder: Path):
        from qtune.finetune.qwth import load_compact

        return load_compact(base, folder / fmt.QWTH_DIR)

    def describe(self, config: QWTHConfig) -> str:
        shots = "exact probabilities" if config.shots is None else f"{config.shots} shots"
        return (f"QWTH: rank-{config.r} LoRA factors (alpha {config.lora_alpha:g}) on "
                f"{', '.join(config.target_modules)} whose matrices are tensor-train cores "
                f"(TT rank {config.tt_rank}, {config.n_factors} factors) modulated by a "
                f"{config.n_qubits}-qubit, {config.circuit_layers}-layer parameterised quantum "
                f"circuit simulated with PennyLane `{config.device}` ({shots}). Only the cores "
                "and circuit angles are trained; the dense LoRA factors are generated from "
                "them and exported as a standard PEFT LoRA.")


METHOD = QWTHMethod()
