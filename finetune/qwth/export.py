"""Saving, loading and exporting QWTH adapters.

Two on-disk forms:
- compact (``save_compact`` / ``load_compact``): ``qwth_config.json``,
  ``qwth_model.safetensors`` (circuit angles, TT cores, fusion scalars: what was trained)
  and ``qwth_metadata.json`` (base model name, hidden sizes, adapted module shapes);
- PEFT LoRA (``export_peft``): ``adapter_config.json`` + ``adapter_model.safetensors`` with
  PEFT's key names, so transformers+PEFT and vLLM load it as an ordinary LoRA. The export
  is exact: A and B are the matrices the adapter itself uses (ΔW = alpha/r · B A).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from qtune.finetune.qwth.config import QWTHConfig
from qtune.finetune.qwth.model import QWTHModel, matches_target
from torch import nn

from qtune.errors import QtuneError

CONFIG_FILE = "qwth_config.json"
WEIGHTS_FILE = "qwth_model.safetensors"
METADATA_FILE = "qwth_metadata.json"
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 1
#: Base-config sizes that must agree between an adapter and the model it is put on.
SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "vocab_size")
_PEFT_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")


def _config_dict(base_config: Any) -> dict[str, Any]:
    """A base model config as a dict: from a PretrainedConfig, a model, a dict, or a path
    to config.json or to a model folder."""
    if isinstance(base_config, nn.Module):
        base_config = getattr(base_config, "config", None)
        if base_config is None:
            return {}
    if isinstance(base_config, (str, Path)):
        path = Path(base_config)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise QtuneError(f"no base model config at {path}")
        return json.loads(path.read_text())
    if isinstance(base_config, dict):
        return dict(base_config)
    return base_config.to_dict()


def base_sizes(base_config: Any) -> dict[str, int]:
    data = _config_dict(base_config)
    sizes = {key: data[key] for key in SIZE_KEYS if data.get(key) is not None}
    if "head_dim" not in sizes and data.get("hidden_size") and data.get("num_attention_heads"):
        sizes["head_dim"] = data["hidden_size"] // data["num_attention_heads"]
    return sizes


def expected_module_shapes(base_config: Any) -> dict[str, tuple[int, int]]:
    """(in, out) of the linear layers of a Llama-style decoder, from its config alone."""
    sizes = base_sizes(base_config)
    needed = ("hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim")
    if not all(key in sizes for key in needed):
        return {}
    hidden, head_dim = sizes["hidden_size"], sizes["head_dim"]
    q_out = sizes["num_attention_heads"] * head_dim
    kv_out = sizes.get("num_key_value_heads", sizes["num_attention_heads"]) * head_dim
    inter = sizes.get("intermediate_size")
    shapes: dict[str, tuple[int, int]] = {}
    for i in range(sizes["num_hidden_layers"]):
        prefix = f"model.layers.{i}"
        shapes[f"{prefix}.self_attn.q_proj"] = (hidden, q_out)
        shapes[f"{prefix}.self_attn.k_proj"] = (hidden, kv_out)
        shapes[f"{prefix}.self_attn.v_proj"] = (hidden, kv_out)
        shapes[f"{prefix}.self_attn.o_proj"] = (q_out, hidden)
        if inter:
            shapes[f"{prefix}.mlp.gate_proj"] = (hidden, inter)
            shapes[f"{prefix}.mlp.up_proj"] = (hidden, inter)
            shapes[f"{prefix}.mlp.down_proj"] = (inter, hidden)
    return shapes


def _model_linear_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    from qtune.finetune.qwth.layer import QWTHLinear

    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, QWTHLinear)) and not name.endswith(".base_layer"):
            shapes[name] = (module.in_features, module.out_features)
    return shapes


def _adapter_module_shapes(folder: Path) -> dict[str, tuple[int, int]]:
    """(in, out) of every adapted module recorded in an adapter folder."""
    metadata_path = folder / METADATA_FILE
    if metadata_path.is_file():
        metadata = json.loads(metadata_path.read_text())
        return {name: tuple(shape) for name, shape in metadata.get("module_shapes", {}).items()}
    weights = folder / PEFT_WEIGHTS_FILE
    if not weights.is_file():
        raise QtuneError(f"{folder} holds neither a QWTH adapter nor a PEFT LoRA adapter")
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    with safe_open(str(weights), "pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safetensors handle is not a dict)
            match = _PEFT_KEY.match(key)
            if not match:
                continue
            shape = handle.get_slice(key).get_shape()
            entry = shapes.setdefault(match["module"], [0, 0])
            if match["which"] == "A":
                entry[0] = shape[1]
            else:
                entry[1] = shape[0]
    return {name: (d_in, d_out) for name, (d_in, d_out) in shapes.items()}


def check_adapter_matches_base(adapter_folder: str | Path, base_model_config: Any) -> None:
    """Raise QtuneError when the adapter in ``adapter_folder`` (compact or exported) was
    made for a base model of other sizes or module shapes than ``base_model_config``
    (a transformers config, a model, a dict, or a path to a model folder / config.json)."""
    folder = Path(adapter_folder)
    if not folder.is_dir():
        raise QtuneError(f"adapter folder {folder} does not exist")
    metadata_path = folder / METADATA_FILE
    if metadata_path.is_file():
        recorded = json.loads(metadata_path.read_text()).get("base_sizes", {})
        actual = base_sizes(base_model_config)
        different = {k: (recorded[k], actual[k]) for k in recorded
                     if k in actual and recorded[k] != actual[k]}
        if different:
            details = ", ".join(f"{k} {a} (adapter) vs {b} (base)"
                                for k, (a, b) in different.items())
            raise QtuneError(
                f"adapter {folder} was exported for another base model: {details}; "
                "use the base model it was trained on"
            )
    if isinstance(base_model_config, nn.Module):
        expected = _model_linear_shapes(base_model_config)
    else:
        expected = expected_module_shapes(base_model_config)
    if not expected:
        return
    for name, shape in _adapter_module_shapes(folder).items():
        if name not in expected:
            raise QtuneError(
                f"adapter {folder} was exported for another base model: it adapts {name}, "
                "which this base model does not have"
            )
        if tuple(shape) != tuple(expected[name]):
            raise QtuneError(
                f"adapter {folder} was exported for another base model: {name} is "
                f"{shape[0]}->{shape[1]} in the adapter but {expected[name][0]}->"
                f"{expected[name][1]} in the base model"
            )


def _base_name(model: QWTHModel) -> str | None:
    config = getattr(model.base_model, "config", None)
    return getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)


def _metadata(model: QWTHModel, base_model_name_or_path: str | None = None) -> dict[str, Any]:
    config = getattr(model.base_model, "config", None)
    return {
        "format": "qwth",
        "format_version": FORMAT_VERSION,
        "base_model_name_or_path": base_model_name_or_path or _base_name(model),
        "base_sizes": base_sizes(config) if config is not None else {},
        "module_shapes": {name: list(shape) for name, shape in model.layer_shapes().items()},
        "trainable_parameters": model.num_trainable_parameters(),
        "lora_parameters": model.lora_parameter_count(),
        "bond_entries": model.n_bond_entries,
    }


def save_compact(model: QWTHModel, folder: str | Path) -> Path:
    """Write the trained QWTH parameters, config and base-model metadata to ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    (folder / METADATA_FILE).write_text(json.dumps(_metadata(model), indent=2) + "\n")
    save_file(model.compact_state_dict(), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    return folder


def load_compact(base_model: nn.Module, folder: str | Path) -> QWTHModel:
    """Rebuild a QWTHModel on ``base_model`` from a ``save_compact`` folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise QtuneError(f"{folder} is not a QWTH adapter folder: {name} is missing")
    config = QWTHConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    if (folder / METADATA_FILE).is_file():
        check_adapter_matches_base(folder, base_model)
    model = QWTHModel(base_model, config)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    own = dict(model.named_parameters())
    trainable = {name for name, p in own.items() if p.requires_grad}
    missing, unexpected = sorted(trainable - set(tensors)), sorted(set(tensors) - trainable)
    if missing or unexpected:
        raise QtuneError(
            f"{folder} does not fit this base model and config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} (adapter exported for another base model?)"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            if own[name].shape != tensor.shape:
                raise QtuneError(
                    f"{folder}: {name} has shape {tuple(tensor.shape)}, the model expects "
                    f"{tuple(own[name].shape)} (adapter exported for another base model?)"
                )
            own[name].copy_(tensor)
    return model


def peft_target_modules(model: QWTHModel) -> list[str]:
    """Suffix names when the config used plain names (as PEFT and vLLM expect), else the
    full paths of the adapted modules."""
    if all("." not in target for target in model.config.target_modules):
        return sorted({name.rsplit(".", 1)[-1] for name in model.adapted})
    return sorted(model.adapted)


def export_peft(model: QWTHModel, folder: str | Path, base_model_name_or_path: str) -> Path:
    """Write the adapter as an ordinary PEFT LoRA (rank r, alpha) to ``folder``."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    targets = peft_target_modules(model)
    # Every adapted module must be matched by the exported targets, and no other one.
    assert all(matches_target(name, targets) for name in model.adapted)
    lora_config = LoraConfig(
        r=model.config.r, lora_alpha=model.config.lora_alpha, target_modules=targets,
        lora_dropout=0.0, bias="none", fan_in_fan_out=False, use_rslora=False,
        modules_to_save=None, task_type="CAUSAL_LM", inference_mode=True,
        base_model_name_or_path=base_model_name_or_path,
    )
    lora_config.save_pretrained(str(folder))
    tensors = {}
    for name, (a, b) in model.lora_factors().items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    save_file(tensors, str(folder / PEFT_WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / METADATA_FILE).write_text(
        json.dumps(_metadata(model, base_model_name_or_path), indent=2) + "\n"
    )
    return folder
