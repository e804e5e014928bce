"""QWTH — the quantum-weighted tensor hybrid adapter.

Tensor-train cores (classical branch) generate the LoRA factors A and B of every target
layer; one parameterised quantum circuit (quantum branch) weights every bond between the
cores through trainable fusion scalars. The result exports exactly to a PEFT LoRA.
See docs/method.md.

The names below load on first use (PEP 562), so that importing the config, as the CLI
does to show its defaults, does not import torch or PennyLane.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "QWTHConfig": "config",
    "QWTHModel": "model",
    "get_qwth_model": "model",
    "lora_parameter_count": "model",
    "qwth_parameter_count": "model",
    "export_peft": "export",
    "load_compact": "export",
    "save_compact": "export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
