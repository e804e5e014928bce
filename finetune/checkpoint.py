"""Checkpoints of a run: written atomically, restored exactly (weights, optimizer,
scheduler, random state, history), refused when the settings changed.

A checkpoint holds tensors and plain data only (dicts, lists, numbers, strings) and is
read with ``torch.load(weights_only=True)``: unpickling one can never run code, so a
crafted ``last.pt`` is refused instead of executed. The NumPy random state, a tuple
holding an array, is stored as a tensor and plain numbers for that reason."""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from qtune.finetune.config import RESUME_FREE_FIELDS, TrainConfig

from qtune.adapter_format import CHECKPOINT_DIR, CHECKPOINT_FILE
from qtune.errors import QtuneError


@dataclass
class RunState:
    """What a checkpoint restores besides the model and optimizer."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    elapsed: float = 0.0
    tokens: int = 0
    label_tokens: int = 0
    #: what the objective keeps between steps (preference tuning: the reference's log-probs)
    extra: dict = field(default_factory=dict)


def rng_state() -> dict:
    """Every random generator's state, as tensors and plain data."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "state": list(internal), "gauss": gauss},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "position": int(position), "has_gauss": int(has_gauss),
                       "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32),
                         numpy["position"], numpy["has_gauss"], numpy["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def checkpoint_path(output: Path) -> Path:
    return output / CHECKPOINT_DIR / CHECKPOINT_FILE


def _comparable(config_dict: Mapping[str, Any]) -> dict:
    return {k: v for k, v in config_dict.items() if k not in RESUME_FREE_FIELDS}


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents; a QtuneError naming the file when it is not a checkpoint
    qtune wrote (corrupt, cut short, or holding code rather than data)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise QtuneError(
            f"{path} holds more than tensors and plain data, so it was not loaded (loading "
            f"it could run code): {str(error).splitlines()[0]}. Delete it, or start the run "
            "afresh with --overwrite."
        ) from error
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise QtuneError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'empty'}). Delete it and resume "
            "from scratch with --overwrite, or restore the file."
        ) from error
    if not isinstance(saved, dict):
        raise QtuneError(f"{path} is not a qtune checkpoint (it holds a "
                         f"{type(saved).__name__}, not a dict of fields); {_REMEDY}")
    missing = sorted(set(CHECKPOINT_FIELDS) - set(saved))
    if missing:
        raise QtuneError(f"{path} is not a qtune checkpoint: field(s) {', '.join(missing)} "
                         f"missing; {_REMEDY}")
    for name, kind in CHECKPOINT_FIELDS.items():
        if not isinstance(saved[name], kind):
            raise QtuneError(f"{path}: field {name!r} is a {type(saved[name]).__name__}, not "
                             f"{getattr(kind, '__name__', kind)}; {_REMEDY}")
    return saved


#: Every field a checkpoint holds, and its type.
CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "step": int, "config": dict, "trainable": dict, "optimizer": dict, "scheduler": dict,
    "rng": dict, "history": list, "elapsed": (int, float), "tokens": int,
    "label_tokens": int,
}
_REMEDY = "delete it, or start the run afresh with --overwrite"


def _restore_parameters(path: Path, saved: dict, model) -> None:
    """Copy the saved trainable tensors into ``model``, naming any that does not fit."""
    parameters = dict(trainable_parameters(model))
    unknown = sorted(set(saved) - set(parameters))
    absent = sorted(set(parameters) - set(saved))
    if unknown or absent:
        raise QtuneError(f"{path}: field 'trainable' does not match this model (not in the "
                         f"model: {unknown[:3]}; not in the checkpoint: {absent[:3]}); {_REMEDY}")
    with torch.no_grad():
        for name, value in saved.items():
            if not isinstance(value, torch.Tensor) or value.shape != parameters[name].shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise QtuneError(f"{path}: trainable tensor {name!r} has shape {shape}, the "
                                 f"model's is {tuple(parameters[name].shape)}; {_REMEDY}")
            parameters[name].copy_(value)


def load_checkpoint(path: Path, config: TrainConfig, model, optimizer, scheduler) -> RunState:
    saved = read_checkpoint(path)
    # A setting added after the checkpoint was written had its default then.
    defaults = {f.name: f.default for f in dataclasses.fields(type(config))}
    before = _comparable(saved["config"])
    mismatched = {k for k, v in _comparable(config.to_dict()).items()
                  if before.get(k, defaults.get(k)) != v}
    if mismatched:
        raise QtuneError(
            f"the checkpoint in {path.parent} was made with different settings "
            f"({', '.join(sorted(mismatched))}); resume with the same settings or choose "
            "another --output"
        )
    _restore_parameters(path, saved["trainable"], model)
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler)):
        try:
            target.load_state_dict(saved[name])
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as error:
            raise QtuneError(f"{path}: field {name!r} does not fit this run ({error}); "
                             f"{_REMEDY}") from error
    try:
        _set_rng_state(saved["rng"])
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise QtuneError(f"{path}: field 'rng' is not a random-number state ({error}); "
                         f"{_REMEDY}") from error
    extra = saved.get("extra", {})
    if not isinstance(extra, dict):
        raise QtuneError(f"{path}: field 'extra' is a {type(extra).__name__}, not dict; "
                         f"{_REMEDY}")
    return RunState(step=saved["step"], history=saved["history"], elapsed=saved["elapsed"],
                    tokens=saved["tokens"], label_tokens=saved["label_tokens"], extra=extra)
