"""What QWTH and QTHA share as model wrappers (the pattern of PEFT's tuner models): the
frozen base model inside, its target linear layers swapped for adapter layers, forward and
generate passed through, and every other attribute read from the base model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from qtune.errors import QtuneError


def matches_target(module_name: str, targets: Iterable[str]) -> bool:
    """PEFT's rule: the full name equals a target or ends with '.' + target."""
    return any(module_name == t or module_name.endswith("." + t) for t in targets)


def target_linears(base_model: nn.Module, targets: Iterable[str],
                   method: str) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules an adapter replaces; a clear error when none matches or a
    match is not linear."""
    targets = tuple(targets)
    matched = [(name, module) for name, module in base_model.named_modules()
               if name and matches_target(name, targets)]
    if not matched:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in base_model.named_modules()
                         if isinstance(m, nn.Linear)})
        raise QtuneError(f"no module matched target_modules {list(targets)}; linear layers "
                         f"in this model: {linear}")
    for name, module in matched:
        if not isinstance(module, nn.Linear):
            raise QtuneError(f"target {name!r} is a {type(module).__name__}; {method} adapts "
                             "nn.Linear only")
    return matched


def replace_module(base_model: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = base_model.get_submodule(parent_name) if parent_name else base_model
    setattr(parent, child, layer)


class WrappedModel(nn.Module):
    """A frozen base model with adapter layers in it."""

    def __init__(self, base_model: nn.Module) -> None:
        super().__init__()
        self.base_model = base_model
        for parameter in base_model.parameters():
            parameter.requires_grad_(False)

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.base_model.generate(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def compact_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors only: what a compact adapter folder stores."""
        return {name: p.detach().cpu().contiguous().clone()
                for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable(self, tensors: dict[str, torch.Tensor], folder: Path) -> None:
        """Copy a compact folder's tensors in; a clear error when they do not fit."""
        own = dict(self.named_parameters())
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
