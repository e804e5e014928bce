"""QWTH — the quantum-weighted tensor hybrid adapter.

Tensor-train cores (classical branch) generate the LoRA factors A and B of every target
layer; one parameterised quantum circuit (quantum branch) weights every bond between the
cores through trainable fusion scalars. The result exports exactly to a PEFT LoRA.
See docs/method.md.
"""

from qtune.finetune.qwth.config import SUPPORTED_RANKS, QWTHConfig
from qtune.finetune.qwth.export import (
    check_adapter_matches_base,
    export_peft,
    load_compact,
    save_compact,
)
from qtune.finetune.qwth.model import (
    QWTHModel,
    get_qwth_model,
    lora_parameter_count,
    qwth_parameter_count,
)

__all__ = [
    "SUPPORTED_RANKS",
    "QWTHConfig",
    "QWTHModel",
    "check_adapter_matches_base",
    "export_peft",
    "get_qwth_model",
    "load_compact",
    "lora_parameter_count",
    "qwth_parameter_count",
    "save_compact",
]
