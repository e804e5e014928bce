"""What each adapter folder says about its training: the facts the report is built on."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtune import adapter_format as fmt

#: How many logged steps the "training loss at equal steps" averages (the log is noisy).
LOSS_WINDOW = 10


@dataclass
class AdapterFacts:
    """What an adapter folder says about its training."""

    name: str
    folder: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, float | None]] = field(default_factory=list)
    #: Peak learning rate from training_config.json (None when the folder has none).
    learning_rate: float | None = None

    @property
    def trainable(self) -> int | None:
        return self.metrics.get("trainable_parameters")

    @property
    def compact_bytes(self) -> int | None:
        if self.metrics.get("compact_bytes"):
            return int(self.metrics["compact_bytes"])
        compact = self.folder / fmt.QWTH_DIR
        if compact.is_dir():
            return fmt.folder_bytes(compact)
        return self.peft_bytes

    @property
    def peft_bytes(self) -> int | None:
        weights = self.folder / fmt.PEFT_WEIGHTS_FILE
        return weights.stat().st_size if weights.is_file() else None

    @property
    def tokens_per_second(self) -> float | None:
        tokens, seconds = self.metrics.get("tokens_seen"), self.metrics.get("wall_seconds")
        return tokens / seconds if tokens and seconds else None

    def train_losses(self) -> list[tuple[int, float]]:
        return [
            (int(row["step"]), float(row["train_loss"]))
            for row in self.log
            if row.get("step") is not None and finite(row.get("train_loss"))
        ]

    def eval_losses(self) -> list[tuple[int, float]]:
        return [
            (int(row["step"]), float(row["eval_loss"]))
            for row in self.log
            if row.get("step") is not None and finite(row.get("eval_loss"))
        ]


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def read_adapter(folder: Path) -> AdapterFacts | None:
    """The facts of one adapter folder; None when it holds no adapter."""
    if not (folder / fmt.PEFT_CONFIG_FILE).is_file():
        return None
    metrics = fmt.read_json(folder / fmt.METRICS_FILE)
    config = fmt.read_json(folder / fmt.TRAINING_CONFIG_FILE)
    return AdapterFacts(folder.name, folder, metrics, fmt.read_log(folder / fmt.LOG_FILE),
                        config.get("lr"))


def differing_learning_rates(facts: dict[str, AdapterFacts]) -> dict[str, float]:
    """Each adapter's learning rate when they are not all the same, else an empty dict."""
    rates = {name: f.learning_rate for name, f in sorted(facts.items()) if f.learning_rate}
    return rates if len(set(rates.values())) > 1 else {}


def loss_at_equal_steps(
    lora: AdapterFacts, qwth: AdapterFacts, window: int = LOSS_WINDOW
) -> tuple[int, float, float] | None:
    """``(step, LoRA loss, QWTH loss)``: each run's mean training loss over its last
    ``window`` logged steps up to the last step both runs reached."""
    lora_rows, qwth_rows = lora.train_losses(), qwth.train_losses()
    if not lora_rows or not qwth_rows:
        return None
    step = min(lora_rows[-1][0], qwth_rows[-1][0])

    def mean_up_to(rows: list[tuple[int, float]]) -> float:
        kept = [loss for s, loss in rows if s <= step][-window:]
        return sum(kept) / len(kept)

    return step, mean_up_to(lora_rows), mean_up_to(qwth_rows)


def budget_words(facts: dict[str, AdapterFacts]) -> str | None:
    """How much each adapter was trained, from its metrics.json: the context for every verdict."""
    parts = []
    for name, fact in sorted(facts.items()):
        m = fact.metrics
        if m.get("steps") and m.get("tokens_seen"):
            parts.append(
                f"{name} {m['steps']} steps x {m.get('batch_size', '?')} x {m.get('seq_len', '?')} "
                f"tokens ({int(m['tokens_seen']):,} tokens, {int(m.get('examples_seen', 0)):,} examples)"
            )
    if not parts:
        return None
    text = (
        "- Training budget: " + "; ".join(parts) + ". That is a small fraction of one epoch, "
        "so these figures compare the methods early in training, not at convergence."
    )
    rates = differing_learning_rates(facts)
    if rates:
        text += (
            " Learning rates differ by method (" + ", ".join(f"{n} {lr:g}" for n, lr in rates.items())
            + "); the fair comparison, every method at its own tuned rate over three seeds, "
            "is docs/study.md."
        )
    return text
