"""QTHA, Origin Quantum's per-token quantum tensor hybrid adapter (finetune/qtha/). Its
update depends on each token, so it has no LoRA form: trained and evaluated in process."""

from __future__ import annotations

from pathlib import Path

from qtune.finetune.methods.base import AdapterMethod, SavedAdapter
from qtune.finetune.qwth.config import QWTHConfig

from qtune import adapter_format as fmt


class QTHAMethod(AdapterMethod):
    name = "qtha"
    label = "QTHA"
    summary = "Origin Quantum's per-token adapter (trained in process; vLLM cannot serve it)"
    #: QTHA reads r (= its qubits), the cores' settings and circuit_layers of QWTH's config.
    config_class = QWTHConfig
    default_lr = 1e-2
    default_lr_source = "tuned: docs/study-designs.md, both assistants"
    compact_note = (f"the `{fmt.QTHA_DIR}/` folder (`qtune.finetune.qtha.model.load_qtha` "
                   "rebuilds it)")
    servable = False

    def validate(self, config: QWTHConfig) -> None:
        from qtune.finetune.qtha import check_qtha_rank

        config.validate(check_device=False)
        check_qtha_rank(config.r)

    def wrap(self, base, config: QWTHConfig):
        from qtune.finetune.qtha.model import get_qtha_model

        return get_qtha_model(base, config)

    def save(self, model, folder: Path, base_name: str) -> SavedAdapter:
        from qtune.finetune.qtha.model import save_qtha

        compact = save_qtha(model, folder / fmt.QTHA_DIR)
        return SavedAdapter(f"{fmt.QTHA_DIR}/", fmt.folder_bytes(compact))

    def load(self, base, folder: Path):
        from qtune.finetune.qtha.model import load_qtha

        return load_qtha(base, folder / fmt.QTHA_DIR)

    def describe(self, config: QWTHConfig) -> str:
        return (f"QTHA (Origin Quantum's per-token adapter) on {', '.join(config.target_modules)}: "
                f"a tensor-train down-projection to r = {config.r}, a {config.r}-qubit circuit "
                f"with {config.circuit_layers} re-encoding layer(s) fused with a classical branch "
                "by trainable r x r matrices, and a tensor-train up-projection. Its update "
                "depends on the token, so it has no LoRA form: trained and evaluated in process, "
                "not served by vLLM.")


METHOD = QTHAMethod()
