"""What defines a fine-tuning run: one typed dataclass, checked before anything loads.

``TrainConfig`` holds the run (task, method, schedule, budget, outputs) and the chosen
method's own config (``adapter``: an ``AdapterConfig`` subclass from the method registry,
``qtune.finetune.methods``). TOML files and ``training_config.json`` stay flat: adapter
keys sit beside the run's keys (or in an ``[adapter]`` table), and ``from_dict`` routes
them to the method's config. Every field's docstring is its help text (``--help`` and
docs/configuration.md). Importing this module is cheap (no torch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qtune.finetune.methods import AdapterConfig, get_method, method_names, owners_of

from qtune.config import settings
from qtune.errors import QtuneError
from qtune.vocab import CHAT_TASK, EVAL_SPLITS, PREFERENCE_OBJECTIVES, TASKS

MIXED_PRECISION = ("auto", "bf16", "no")
#: What a run learns from (qtune.finetune.preference_data reads the preference data).
OBJECTIVES = ("sft", *PREFERENCE_OBJECTIVES)
EVAL_POOLS = ("best", "all")
#: Fields that may change between a run and its resumption without changing its result.
RESUME_FREE_FIELDS = {"output", "resume", "overwrite", "eval_every", "eval_at_start", "save_every",
                      "keep_checkpoint"}
#: Adapter fields a run sets itself (an adapter's seed is the run's seed).
_RUN_OWNED_ADAPTER_FIELDS = {"seed"}


def adapter_fields(config_class: type[AdapterConfig]) -> list[str]:
    """The fields of a method's config a run may set (every one but the seed)."""
    return [f.name for f in dataclasses.fields(config_class)
            if f.name not in _RUN_OWNED_ADAPTER_FIELDS]


@dataclass
class TrainConfig:
    """Everything that defines a fine-tuning run (TOML keys use these names)."""

    task: str | None = None
    """What to learn: math (GSM8K), counselling (CounselChat) or cpsycound (CPsyCounD, local data only) (unset: the assistant's data, else math)."""
    assistant: str | None = None
    """A shipped assistant's name or an assistant's .toml file (unset: the task's assistant): its system prompt, and its own chat files where it has them (`qtune assistants`)."""
    method: str = "qwth"
    """The adapter method (`qtune.finetune.methods`); its own settings follow the run's."""
    base_model: str | None = None
    """Base model: Hugging Face id or local folder (unset: the embedded SmolLM2-135M-Instruct)."""
    steps: int = 120
    """Optimizer steps."""
    batch_size: int = 8
    """Examples per micro-batch on each process."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    seq_len: int = 256
    """Tokens per example; longer rows are cut (`qtune data lengths` counts them)."""
    lr: float | None = None
    """Peak learning rate (linear warm-up, then cosine decay) (unset: the method's default, its tuned rate where a study measured it)."""
    warmup: int = 10
    """Warm-up steps."""
    min_lr_ratio: float = 0.1
    """The cosine decays to this fraction of lr."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    eval_every: int = 20
    """Held-out loss every N steps (0: at the start and the end only)."""
    eval_at_start: bool = True
    """Measure the held-out loss at step 0 (a study, which compares final losses, skips it)."""
    eval_batches: int = 4
    """Micro-batches in the fixed held-out slice."""
    eval_pool: str = "best"
    """Counselling's held-out answers: best (the most upvoted per question, 81) or all (173)."""
    save_every: int = 20
    """Checkpoint every N steps (0: at the end only)."""
    seed: int = 0
    """Data order, and the adapter's initial weights."""
    output: str | None = None
    """The run folder: adapter, log.csv, loss.png, card, checkpoint (unset: $QTUNE_RUNS_DIR/<task>-<method>)."""
    resume: bool = False
    """Continue from the folder's checkpoint, exactly (weights, optimizer, schedule, data order, random state)."""
    overwrite: bool = False
    """Start afresh in a folder that holds a run (deletes that run's files, nothing else)."""
    max_train_examples: int | None = None
    """Train on the first N training examples only (unset: all)."""
    mixed_precision: str = "auto"
    """auto (bf16 where the hardware runs it natively, else fp32), bf16 or no (fp32)."""
    keep_checkpoint: bool = False
    """Keep checkpoint/ after a successful run."""
    objective: str = "sft"
    """sft (next-token loss on the answers), dpo (preference pairs) or kto (answers rated good or bad)."""
    preferences: str | None = None
    """dpo/kto: the preference data: counselchat (upvoted over less upvoted answers), math (the reference over the base model's wrong answer: `qtune data pairs math`), a `qtune feedback export` folder, or a JSONL file."""
    beta: float = 0.1
    """dpo/kto: how far from the reference model the policy may move (TRL's beta)."""
    start_from: str | None = None
    """An adapter folder to start from, and the reference of dpo/kto (unset: a fresh adapter; the base model is then the reference); its adapter settings are taken."""
    adapter: AdapterConfig | None = None
    """The method's own settings (unset: its defaults)."""

    FLAG_NAMES: ClassVar[dict[str, str]] = {"base_model": "--model", "start_from": "--from"}

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = self._assistant_task()
        if self.lr is None and self.method in method_names():
            self.lr = get_method(self.method).default_lr
        config_class = get_method(self.method).config_class
        if self.adapter is None:
            self.adapter = config_class()
        elif isinstance(self.adapter, Mapping):
            self.adapter = config_class.from_dict(dict(self.adapter))
        if hasattr(self.adapter, "seed"):
            self.adapter.seed = self.seed

    def _assistant_task(self) -> str:
        """The task an unset ``task`` means: the assistant's own chat files, or its first
        data set; math without an assistant."""
        if not self.assistant:
            return "math"
        from qtune.assistants import get_assistant

        assistant = get_assistant(self.assistant)
        if assistant.own_data:
            return CHAT_TASK
        if not assistant.tasks:
            raise QtuneError(f"assistant {assistant.name!r} has no data: give its file a "
                             "`train` chat file")
        return assistant.tasks[0]

    @classmethod
    def run_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "adapter"]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """From TOML or JSON: run keys, the method's keys beside them or in an ``adapter``
        table. A key of another method is refused with the methods it belongs to."""
        values = dict(values)
        method = values.get("method", cls.method)
        if method not in method_names():
            raise QtuneError(f"unknown method {method!r}: choose one of {', '.join(method_names())}")
        config_class = get_method(method).config_class
        adapter = dict(values.pop("adapter", None) or {})
        run_keys, adapter_keys = set(cls.run_fields()), set(adapter_fields(config_class))
        for key in list(values):
            if key in adapter_keys:
                adapter[key] = values.pop(key)
        unknown = sorted((set(values) - run_keys) | (set(adapter) - adapter_keys))
        for key in unknown:
            owners = [name for name in owners_of(key) if name != method]
            if owners:
                raise QtuneError(f"{key} is a setting of {', '.join(owners)}, not of {method}: "
                                 f"remove it, or choose that method")
        if unknown:
            known = sorted(run_keys | adapter_keys)
            raise QtuneError(
                f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        try:
            return cls(**values, adapter=config_class(**adapter))
        except TypeError as error:
            raise QtuneError(f"bad training settings: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """Flat: the run's keys, then the adapter's (as in the shipped TOML files)."""
        data = {name: getattr(self, name) for name in self.run_fields()}
        adapter = self.adapter.to_dict()
        data.update({name: adapter[name] for name in adapter_fields(type(self.adapter))})
        return data

    @property
    def output_dir(self) -> Path:
        if self.output:
            return Path(self.output).expanduser()
        if self.task == CHAT_TASK:  # an assistant's own data: the folder takes its name
            from qtune.assistants import get_assistant

            name = f"{get_assistant(self.assistant).name}-{self.method}"
        else:
            name = f"{self.task}-{self.method}"
        suffix = "" if self.objective == "sft" else f"-{self.objective}"
        return settings().runs_dir / f"{name}{suffix}"

    @property
    def eval_split(self) -> str:
        return EVAL_SPLITS.get(self.task, "held-out")

    def validate(self, read_data: bool = True) -> TrainConfig:
        """Raise QtuneError naming the first bad setting (adapter and device included);
        cheap enough to run before any model or data loads. Returns self. ``read_data``
        False skips reading an assistant's or the preference data (a report needs none)."""
        choices = {"task": (*TASKS, CHAT_TASK), "method": method_names(),
                   "mixed_precision": MIXED_PRECISION, "eval_pool": EVAL_POOLS,
                   "objective": OBJECTIVES}
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
        self._adopt_start_adapter()
        get_method(self.method).validate(self.adapter)
        self._validate_assistant(read_data)
        self._validate_preferences(read_data)
        return self

    def _adopt_start_adapter(self) -> None:
        """--from: the run continues that adapter, so it takes its method's settings."""
        if not self.start_from:
            return
        from qtune import adapter_format as fmt

        folder = Path(self.start_from).expanduser()
        try:
            if not (folder / fmt.TRAINING_CONFIG_FILE).is_file():
                raise QtuneError("it is missing")
            trained = fmt.read_json(folder / fmt.TRAINING_CONFIG_FILE)
        except (OSError, ValueError, QtuneError) as error:
            raise QtuneError(f"--from {folder}: not a qtune run folder (no readable "
                             f"{fmt.TRAINING_CONFIG_FILE}: {error})") from error
        if trained.get("method") != self.method:
            raise QtuneError(f"--from {folder} was trained with method "
                             f"{trained.get('method')!r}, not {self.method!r}: choose --method "
                             f"{trained.get('method')}")
        own = adapter_fields(type(self.adapter))
        self.adapter = type(self.adapter).from_dict({k: trained[k] for k in own if k in trained})
        if hasattr(self.adapter, "seed"):
            self.adapter.seed = self.seed

    def _validate_preferences(self, read_data: bool = True) -> None:
        """dpo/kto need preference data, checked now (before anything loads)."""
        if self.objective == "sft":
            if self.preferences:
                raise QtuneError("--preferences is for --objective dpo or kto")
            return
        if not self.preferences:
            raise QtuneError(f"--objective {self.objective} needs --preferences (counselchat, "
                             "math, a `qtune feedback export` folder or a JSONL file)")
        if not self.beta > 0:
            raise QtuneError(f"beta must be positive, got {self.beta!r}")
        if read_data:
            from qtune.finetune.preference_data import check_preferences

            check_preferences(self)

    def _validate_assistant(self, read_data: bool = True) -> None:
        """The assistant exists and fits the task; its own data is read and checked now,
        before any model loads, and a bad row is refused as `qtune data check` names it."""
        if not self.assistant:
            if self.task == CHAT_TASK:
                raise QtuneError("task 'chat' trains on an assistant's own files: give "
                                 "--assistant FILE")
            return
        from qtune.data.sources import assistant_sources, load_chat_source

        from qtune.assistants import get_assistant

        assistant = get_assistant(self.assistant)
        if assistant.own_data != (self.task == CHAT_TASK) or (
                not assistant.own_data and self.task not in assistant.tasks):
            data = "its own chat files (task chat)" if assistant.own_data else \
                f"tasks {', '.join(assistant.tasks)}"
            raise QtuneError(f"assistant {assistant.name!r} trains on {data}, not task "
                             f"{self.task!r}: leave --task unset")
        if assistant.own_data and read_data:
            for source in filter(None, assistant_sources(assistant)):
                load_chat_source(source)
