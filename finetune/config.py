"""What defines a fine-tuning run: one typed dataclass, checked before anything loads.

``TrainConfig`` holds the run (task, method, schedule, budget, outputs) and composes the
adapter's own ``QWTHConfig`` (rank, alpha, targets — shared by both methods — and QWTH's
circuit and tensor-train settings) rather than copying its fields. TOML files and
``training_config.json`` stay flat: adapter keys sit beside the run's keys (or in an
``[adapter]`` table), and ``from_dict`` routes them. Importing this module is cheap (no
torch), so the CLI reads its defaults from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtune.finetune.qwth.config import QWTHConfig

from qtune.config import settings
from qtune.errors import QtuneError
from qtune.vocab import EVAL_SPLITS, TASKS, TRAIN_METHODS

MIXED_PRECISION = ("auto", "bf16", "no")
EVAL_POOLS = ("best", "all")
#: Fields that may change between a run and its resumption without changing its result.
RESUME_FREE_FIELDS = {"output", "resume", "overwrite", "eval_every", "eval_at_start", "save_every",
                      "keep_checkpoint"}
#: Adapter fields a run sets itself (QWTH's seed is the run's seed).
_RUN_OWNED_ADAPTER_FIELDS = {"seed"}


def adapter_fields() -> list[str]:
    """The QWTHConfig fields a run config may set (every one but the seed)."""
    return [f.name for f in dataclasses.fields(QWTHConfig)
            if f.name not in _RUN_OWNED_ADAPTER_FIELDS]


@dataclass
class TrainConfig:
    """Everything that defines a fine-tuning run (TOML keys use these names)."""

    task: str = "math"
    method: str = "qwth"
    base_model: str | None = None  # None: the embedded SmolLM2-135M-Instruct
    steps: int = 120
    batch_size: int = 8
    grad_accum: int = 1
    seq_len: int = 256
    lr: float = 2e-4
    warmup: int = 10
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of lr
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 20  # 0: evaluate only at the start and the end
    #: false: skip the step-0 evaluation (every adapter starts as the base model; a study,
    #: which compares final losses, saves a held-out pass per run).
    eval_at_start: bool = True
    eval_batches: int = 4
    #: "best": CounselChat's held-out questions with their most upvoted answer (81);
    #: "all": every answer to them (173), for held-out sets of more than 81 examples.
    eval_pool: str = "best"
    save_every: int = 20  # 0: checkpoint only at the end
    seed: int = 0  # data order, and the adapter's initial weights
    output: str | None = None  # None: $QTUNE_HOME/runs/<task>-<method>
    resume: bool = False
    overwrite: bool = False  # start afresh where a checkpoint or finished adapter is
    max_train_examples: int | None = None  # use only the first N training examples
    mixed_precision: str = "auto"  # auto: bf16 where the hardware runs it natively
    keep_checkpoint: bool = False  # keep <output>/checkpoint/ after a successful run
    #: The adapter: rank, alpha and targets (both methods), and QWTH's circuit and cores.
    adapter: QWTHConfig = field(default_factory=QWTHConfig)

    def __post_init__(self) -> None:
        if isinstance(self.adapter, Mapping):
            self.adapter = QWTHConfig.from_dict(dict(self.adapter))
        self.adapter.seed = self.seed

    @classmethod
    def run_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "adapter"]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """From TOML or JSON: run keys, adapter keys beside them or in an ``adapter`` table."""
        values = dict(values)
        adapter = dict(values.pop("adapter", None) or {})
        run_keys, adapter_keys = set(cls.run_fields()), set(adapter_fields())
        for key in list(values):
            if key in adapter_keys:
                adapter[key] = values.pop(key)
        unknown = sorted((set(values) - run_keys) | (set(adapter) - adapter_keys))
        if unknown:
            known = sorted(run_keys | adapter_keys)
            raise QtuneError(
                f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        try:
            return cls(**values, adapter=QWTHConfig(**adapter))
        except TypeError as error:
            raise QtuneError(f"bad training settings: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """Flat: the run's keys, then the adapter's (as in the shipped TOML files)."""
        data = {name: getattr(self, name) for name in self.run_fields()}
        adapter = self.adapter.to_dict()
        data.update({name: adapter[name] for name in adapter_fields()})
        return data

    @property
    def output_dir(self) -> Path:
        if self.output:
            return Path(self.output).expanduser()
        return settings().runs_dir / f"{self.task}-{self.method}"

    @property
    def eval_split(self) -> str:
        return EVAL_SPLITS[self.task]

    def validate(self) -> TrainConfig:
        """Raise QtuneError naming the first bad setting (adapter and device included);
        cheap enough to run before any model or data loads. Returns self."""
        choices = {"task": TASKS, "method": TRAIN_METHODS, "mixed_precision": MIXED_PRECISION,
                   "eval_pool": EVAL_POOLS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise QtuneError(
                    f"unknown {name} {getattr(self, name)!r}: choose one of {', '.join(allowed)}"
                )
        for name in ("steps", "batch_size", "grad_accum", "seq_len", "eval_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise QtuneError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise QtuneError(f"{name} must be 0 or more, got {getattr(self, name)!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise QtuneError(f"lr must be a positive number, got {self.lr!r}")
        if self.seq_len < 16:
            raise QtuneError(f"seq_len {self.seq_len} is too short to hold a prompt and answer")
        if self.resume and self.overwrite:
            raise QtuneError("--resume and --overwrite contradict each other: choose one")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise QtuneError("max_train_examples must be a positive integer (or unset)")
        # The circuit's device matters only to QWTH; LoRA runs need no PennyLane plugin.
        self.adapter.validate(check_device=self.method == "qwth")
        if self.method == "qtha":
            from qtune.finetune.qtha import check_qtha_rank

            check_qtha_rank(self.adapter.r)
        return self
