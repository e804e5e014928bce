"""Saving, loading and exporting QWTH adapters.

Two on-disk forms:
- compact (``save_compact`` / ``load_compact``): ``qwth_config.json``,
  ``qwth_model.safetensors`` (circuit angles, TT cores, fusion scalars: what was trained)
  and ``qwth_metadata.json`` (base model name, hidden sizes, adapted module shapes);
- PEFT LoRA (``export_peft``): ``adapter_config.json`` + ``adapter_model.safetensors`` with
  PEFT's key names, so transformers+PEFT and vLLM load it as an ordinary LoRA. The export
  is exact: A and B are the matrices the adapter itself uses (ΔW = alpha/r · B A; after a
  non-zero start, [A; A0] and [B, -B0] at rank 2r and alpha 2·alpha).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qtune.finetune.qwth.config import QWTHConfig
from qtune.finetune.qwth.model import QWTHModel
from torch import nn

from qtune.adapter_format import (
    QWTH_CONFIG_FILE,
    QWTH_FORMAT_VERSION,
    QWTH_METADATA_FILE,
    QWTH_WEIGHTS_FILE,
    base_sizes,
    check_fits_base,
    write_json,
)
from qtune.errors import QtuneError


def _base_name(model: QWTHModel) -> str | None:
    config = getattr(model.base_model, "config", None)
    return getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)


def _metadata(model: QWTHModel, base_model_name_or_path: str | None = None) -> dict[str, Any]:
    config = getattr(model.base_model, "config", None)
    return {
        "format": "qwth",
        "format_version": QWTH_FORMAT_VERSION,
        "base_model_name_or_path": base_model_name_or_path or _base_name(model),
        "base_sizes": base_sizes(config) if config is not None else {},
        "module_shapes": {name: list(shape) for name, shape in model.layer_shapes().items()},
        "trainable_parameters": model.num_trainable_parameters(),
        "lora_parameters": model.lora_parameter_count(),
        "bond_entries": model.n_bond_entries,
    }


def save_compact(model: QWTHModel, folder: str | Path,
                 base_model_name_or_path: str | None = None) -> Path:
    """Write the trained QWTH parameters, config and base-model metadata to ``folder``;
    the base is recorded by ``base_model_name_or_path`` where given (a name that travels,
    not the local folder it was loaded from)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / QWTH_CONFIG_FILE, model.config.to_dict())
    write_json(folder / QWTH_METADATA_FILE, _metadata(model, base_model_name_or_path))
    save_file(model.compact_state_dict(), str(folder / QWTH_WEIGHTS_FILE), metadata={"format": "pt"})
    return folder


def load_compact(base_model: nn.Module, folder: str | Path) -> QWTHModel:
    """Rebuild a QWTHModel on ``base_model`` from a ``save_compact`` folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (QWTH_CONFIG_FILE, QWTH_WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise QtuneError(f"{folder} is not a QWTH adapter folder: {name} is missing")
    config = QWTHConfig.from_dict(json.loads((folder / QWTH_CONFIG_FILE).read_text()))
    if (folder / QWTH_METADATA_FILE).is_file():
        check_fits_base(folder, base_model)
    model = QWTHModel(base_model, config)
    tensors = load_file(str(folder / QWTH_WEIGHTS_FILE))
    model.load_trainable(tensors, folder)
    return model


def export_peft(model: QWTHModel, folder: str | Path, base_model_name_or_path: str) -> Path:
    """Write the adapter as an ordinary PEFT LoRA (rank r, alpha) to ``folder``."""
    from qtune.finetune.lora_export import write_lora_folder

    folder = Path(folder)
    write_lora_folder(folder, model.lora_factors(), model.export_rank, model.export_alpha,
                      model.config.target_modules, base_model_name_or_path)
    write_json(folder / QWTH_METADATA_FILE, _metadata(model, base_model_name_or_path))
    return folder
