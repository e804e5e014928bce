"""What a study is: a grid of fine-tuning runs (task x method x learning rate x seed)
under one training budget, read from a TOML file and checked before anything runs.

The methods a study compares are named here once. Each is a setting of the run's config,
so every method trains, exports and serves through the same code as ``qtune finetune``:
the LoRA baseline at rank 8 and at rank 1 (about QWTH's parameter count), QWTH, three
controls that keep QWTH's tensor-train cores and change only its quantum branch, QWTH's
designs (issue 13) and QTHA, the seed paper's per-token adapter.

Studies share one runs.csv: a row is keyed by task, method, rate and seed and carries its
method's fingerprint (the budget plus the method's settings), so a study that ``extends``
another reuses the runs they have in common and a changed budget is caught.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtune.finetune.config import TrainConfig

from qtune.config import PROJECT_ROOT
from qtune.errors import QtuneError
from qtune.vocab import TASKS

#: Study method -> the run settings that make it (on top of the study's budget).
STUDY_METHODS: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora"},
    "lora-r1": {"method": "lora", "r": 1},
    "qwth": {"method": "qwth", "quantum": "circuit"},
    "qwth-none": {"method": "qwth", "quantum": "none"},
    "qwth-vector": {"method": "qwth", "quantum": "vector"},
    "qwth-frozen": {"method": "qwth", "quantum": "frozen"},
    "qwth-expval": {"method": "qwth", "readout": "expval"},
    "qwth-layer": {"method": "qwth", "circuit_scope": "layer", "device": "default.qubit",
                   "n_qubits": 4},
    "qwth-nonzero": {"method": "qwth", "init": "nonzero"},
    "qwth-lr-split": {"method": "qwth", "lr_scale_fusion": 10.0, "lr_scale_quantum": 10.0},
    "qtha": {"method": "qtha", "circuit_layers": 1},
}
#: What each study method is, for reports.
METHOD_NOTES: dict[str, str] = {
    "lora": "PEFT LoRA of rank 8 (the shipped baseline)",
    "lora-r1": "PEFT LoRA of rank 1 (about QWTH's parameter count)",
    "qwth": "circuit-weighted tensor-train cores (as shipped)",
    "qwth-none": "QWTH's cores without a quantum branch (the plain tensor-train adapter)",
    "qwth-vector": "a trainable classical vector of the circuit's 2^n outputs instead of it",
    "qwth-frozen": "the circuit with its random angles fixed",
    "qwth-expval": "the circuit read out as <Z_i>, <Z_i Z_j> instead of probabilities",
    "qwth-layer": "one 4-qubit circuit per adapted layer (a broadcast batch)",
    "qwth-nonzero": "QuanTA's start: every core random, the initial update subtracted "
                    "(exported at rank 2r)",
    "qwth-lr-split": "fusion scalars and circuit angles at 10x the cores' rate",
    "qtha": "the seed paper's per-token adapter (r-qubit circuit per token; not servable "
            "as a LoRA)",
}
#: Run settings a study fixes itself (per run) rather than take from [train].
PER_RUN_KEYS = {"task", "method", "lr", "seed", "output", "resume", "overwrite", "r", "quantum",
                "readout", "circuit_scope", "init", "lr_scale_fusion", "lr_scale_quantum",
                "eval_at_start"}
#: What a study that ``extends`` another takes from it (its name, methods, report and
#: questions stay its own).
INHERITED_SETTINGS = {"tasks", "seeds", "train", "output", "max_extensions", "learning_rates"}
#: The held-out set must be at least this many examples (eval_batches x batch_size).
MIN_DEV_EXAMPLES = 128


@dataclass
class StudyConfig:
    """A study's grid and budget (TOML keys use these names; [train] and [learning_rates]
    are tables)."""

    name: str
    tasks: list[str]
    methods: list[str]
    learning_rates: dict[str, list[float]]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    #: Seed of the learning-rate sweep (the first of ``seeds``).
    train: dict[str, Any] = field(default_factory=dict)
    #: Where runs.csv and the report's figures go (relative: to the project root).
    output: str = "docs/study"
    #: How often a sweep whose best rate sits at an edge is extended by one more rate.
    max_extensions: int = 2
    #: Another study file (relative to this one) whose settings this one starts from.
    extends: str | None = None
    #: The report's path (relative: to the project root); default
    #: <output>/../study-<name>.md.
    report: str | None = None
    #: The question in the report's title.
    title: str = "does the circuit earn its place?"
    #: Compare every other method with these (paired by seed); empty: the circuit study's
    #: questions (QWTH against LoRA and against each control).
    compare_to: list[str] = field(default_factory=list)

    @classmethod
    def from_toml(cls, path: Path) -> StudyConfig:
        from qtune.finetune.cli import read_toml

        values = read_toml(path)
        if values.get("extends"):
            parent = read_toml(path.parent / values["extends"])
            rates = {**parent.get("learning_rates", {}), **values.get("learning_rates", {})}
            inherited = {k: v for k, v in parent.items() if k in INHERITED_SETTINGS}
            values = {**inherited, **values, "learning_rates": rates}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise QtuneError(f"{path}: unknown study setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        try:
            config = cls(**{"name": path.stem, **values})
        except TypeError as error:
            raise QtuneError(f"{path}: {error}") from error
        return config.validate(str(path))

    def validate(self, where: str = "study") -> StudyConfig:
        for task in self.tasks:
            if task not in TASKS:
                raise QtuneError(f"{where}: unknown task {task!r}: choose from {', '.join(TASKS)}")
        for method in self.methods:
            if method not in STUDY_METHODS:
                raise QtuneError(f"{where}: unknown method {method!r}: choose from "
                                 f"{', '.join(STUDY_METHODS)}")
            rates = self.learning_rates.get(method) or []
            if len(rates) < 2 or not all(isinstance(r, (int, float)) and r > 0 for r in rates):
                raise QtuneError(f"{where}: [learning_rates] {method} needs at least two "
                                 f"positive rates to sweep, got {rates!r}")
        for method in self.compare_to:
            if method not in self.methods:
                raise QtuneError(f"{where}: compare_to names {method!r}, which is not among "
                                 f"the study's methods")
        if not self.seeds:
            raise QtuneError(f"{where}: seeds is empty: give at least one seed")
        fixed = sorted(set(self.train) & PER_RUN_KEYS)
        if fixed:
            raise QtuneError(f"{where}: [train] may not set {', '.join(fixed)}: the study sets "
                             "them per run")
        budget = self.run_config("math", self.methods[0], 1e-3, 0, Path("/tmp/check"))
        dev = budget.eval_batches * budget.batch_size
        if dev < MIN_DEV_EXAMPLES:
            raise QtuneError(f"{where}: the held-out set is {dev} examples (eval_batches x "
                             f"batch_size); a study needs at least {MIN_DEV_EXAMPLES}")
        return self

    def run_config(self, task: str, method: str, lr: float, seed: int,
                   output: Path) -> TrainConfig:
        """The fine-tuning run of one grid cell (validated)."""
        # No step-0 evaluation: every adapter starts as the base model, and the study
        # compares final losses (one held-out pass saved per run).
        values = {**self.train, **STUDY_METHODS[method], "task": task, "lr": lr,
                  "seed": seed, "output": str(output), "eval_at_start": False}
        return TrainConfig.from_dict(values).validate()

    @property
    def output_dir(self) -> Path:
        path = Path(self.output)
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def report_path(self) -> Path:
        if self.report is None:
            return self.output_dir.parent / f"study-{self.name}.md"
        path = Path(self.report)
        return path if path.is_absolute() else PROJECT_ROOT / path

    def fingerprint(self, method: str) -> str:
        """What makes two rows of a method comparable: the budget and the method's settings
        (not the rates or seeds, which a study may extend)."""
        data = {"train": self.train, "method": STUDY_METHODS[method]}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def extend_sweep(rates: list[float], best: float) -> float | None:
    """One more rate beyond the edge the best one sits at (same log spacing), or None
    when the best rate is inside the sweep."""
    ordered = sorted(rates)
    if len(ordered) < 2 or ordered[0] < best < ordered[-1]:
        return None
    if best == ordered[0]:
        return ordered[0] * ordered[0] / ordered[1]
    return ordered[-1] * ordered[-1] / ordered[-2]


def rate_label(lr: float) -> str:
    """A short, exact-enough name for a rate in folder names: 3e-04."""
    exponent = math.floor(math.log10(lr))
    return f"{lr / 10**exponent:.3g}e{exponent:+03d}"
