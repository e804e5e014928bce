"""What an adapter method is, in the manner of PEFT's tuners: a config dataclass and one
registered object that wraps a base model, names its parameter groups, saves (exporting
to a PEFT LoRA where it can) and describes itself.

Importing this module is cheap (no torch): the CLI builds its flags from the configs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from qtune.adapter_format import VLLM_LORA_RANKS
from qtune.errors import QtuneError

if TYPE_CHECKING:
    from torch import nn


@dataclass
class AdapterConfig:
    """The settings every method shares: the LoRA it is served as."""

    r: int = 8
    """Rank of the exported LoRA (every method)."""
    lora_alpha: float = 16
    """LoRA scaling alpha: the update is scaled by alpha / r."""
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    """`nn.Linear` names adapted, matched by suffix as PEFT does."""

    #: Flags whose names differ from their fields' (kept for existing scripts).
    FLAG_NAMES: ClassVar[dict[str, str]] = {"r": "--rank", "lora_alpha": "--alpha",
                                            "target_modules": "--targets"}

    def __post_init__(self) -> None:
        # JSON and TOML give lists; tuples keep configs equal after a round trip.
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    @property
    def export_rank(self) -> int:
        """Rank of the LoRA the adapter exports to."""
        return self.r

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise QtuneError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    def validate(self) -> AdapterConfig:
        """Raise QtuneError naming the first value the adapter or vLLM cannot use."""
        highest = VLLM_LORA_RANKS[-1]
        if not (isinstance(self.r, int) and 1 <= self.r <= highest):
            raise QtuneError(f"rank r={self.r!r} must be an integer in 1..{highest} (vLLM's "
                             "largest LoRA rank)")
        if not (isinstance(self.lora_alpha, (int, float)) and self.lora_alpha > 0):
            raise QtuneError(f"lora_alpha must be positive, got {self.lora_alpha!r}")
        if not self.target_modules or not all(
                isinstance(name, str) and name for name in self.target_modules):
            raise QtuneError(
                f"target_modules must be non-empty module names, got {self.target_modules!r}")
        if self.export_rank > highest:
            raise QtuneError(f"the export's rank {self.export_rank} exceeds vLLM's largest "
                             f"LoRA rank {highest}: lower r")
        return self


@dataclass(frozen=True)
class SavedAdapter:
    """Where a method put its own form of the adapter (for metrics and the card)."""

    compact_path: str  # relative to the run folder
    compact_bytes: int


class AdapterMethod:
    """One adapter method. Subclasses set the class attributes and implement ``wrap``,
    ``save`` and ``describe``; the defaults suit a model whose trainable parameters are
    all the adapter's and train at one rate."""

    name: ClassVar[str]
    label: ClassVar[str]  # how tables and the UI call it
    summary: ClassVar[str]  # one line for --help
    config_class: ClassVar[type[AdapterConfig]] = AdapterConfig
    #: Whether the adapter exports to a PEFT LoRA (so vLLM serves it).
    servable: ClassVar[bool] = True
    #: Where its own form lives and what rebuilds it (for the model card).
    compact_note: ClassVar[str] = "`adapter_model.safetensors`"
    #: The learning rate a run gets when it names none: the method's tuned rate where a
    #: study measured it (docs/study.md), else the centre of its sweep.
    default_lr: ClassVar[float] = 1e-3
    #: Where default_lr comes from, said in --help.
    default_lr_source: ClassVar[str] = "not tuned yet"

    def validate(self, config: AdapterConfig) -> None:
        config.validate()

    def wrap(self, base: nn.Module, config: AdapterConfig) -> nn.Module:
        """The base model with this adapter's trainable parameters (base frozen)."""
        raise NotImplementedError

    def parameter_groups(self, model: nn.Module, lr: float) -> list[dict]:
        """AdamW parameter groups: the model's own where it defines them (as nanoGPT's
        configure_optimizers), else one group of every trainable parameter."""
        if hasattr(model, "parameter_groups"):
            return model.parameter_groups(lr)
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]

    def num_trainable(self, model: nn.Module) -> int:
        """The model's own count where it defines one (QWTH leaves out a weight that
        multiplies nothing), else every trainable parameter."""
        if hasattr(model, "num_trainable_parameters"):
            return model.num_trainable_parameters()
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def save(self, model: nn.Module, folder: Path, base_name: str) -> SavedAdapter:
        """Write the adapter into the run folder: a PEFT LoRA where ``servable``."""
        raise NotImplementedError

    def load(self, base: nn.Module, folder: Path) -> nn.Module:
        """Rebuild the trained adapter on ``base`` from a run folder, in process."""
        raise NotImplementedError

    def describe(self, config: AdapterConfig) -> str:
        """A paragraph for the model card."""
        raise NotImplementedError
