"""Checkpoints of a run: written atomically, restored exactly (weights, optimizer,
scheduler, random state, history), refused when the settings changed.

A checkpoint holds tensors and plain data only (dicts, lists, numbers, strings) and is
read with ``torch.load(weights_only=True)``: unpickling one can never run code, so a
crafted ``last.pt`` is refused instead of executed. The NumPy random state, a tuple
holding an array, is stored as a tensor and plain numbers for that reason."""

from __future__ import annotations

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
    missing = {"step", "config", "trainable", "optimizer", "scheduler", "rng", "history"}
    if not isinstance(saved, dict) or missing - set(saved):
        raise QtuneError(f"{path} is not a qtune checkpoint (fields missing); delete it or "
                         "start afresh with --overwrite")
    return saved


def load_checkpoint(path: Path, config: TrainConfig, model, optimizer, scheduler) -> RunState:
    saved = read_checkpoint(path)
    mismatched = {k for k, v in _comparable(config.to_dict()).items()
                  if _comparable(saved["config"]).get(k) != v}
    if mismatched:
        raise QtuneError(
            f"the checkpoint in {path.parent} was made with different settings "
            f"({', '.join(sorted(mismatched))}); resume with the same settings or choose "
            "another --output"
        )
    parameters = dict(trainable_parameters(model))
    with torch.no_grad():
        for name, value in saved["trainable"].items():
            parameters[name].copy_(value)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(saved["rng"])
    return RunState(step=saved["step"], history=saved["history"], elapsed=saved["elapsed"],
                    tokens=saved["tokens"], label_tokens=saved["label_tokens"])
