"""Recall and false alarms per language with 95% intervals, and the per-message latency."""

from __future__ import annotations

import time
from dataclasses import dataclass

from qtune.safety.dataset import LANGS, load_conversations, load_messages
from qtune.safety.detector import check_conversation, check_message, classifier_flags
from scipy.stats import binomtest


@dataclass(frozen=True)
class Rate:
    hits: int
    total: int

    @property
    def value(self) -> float:
        return self.hits / self.total if self.total else float("nan")

    def interval(self) -> tuple[float, float]:
        """Wilson 95% interval (scipy)."""
        ci = binomtest(self.hits, self.total).proportion_ci(0.95, method="wilson")
        return ci.low, ci.high

    def text(self) -> str:
        low, high = self.interval()
        return f"{self.value:.1%} [{low:.1%}, {high:.1%}] ({self.hits}/{self.total})"


def message_rates(split: str) -> dict[str, tuple[Rate, Rate, list[str]]]:
    """Per language: recall, false-alarm rate, and the crisis messages missed."""
    rows = load_messages(split)
    out = {}
    for lang in LANGS:
        crisis = [m for m in rows if m.lang == lang and m.is_crisis]
        safe = [m for m in rows if m.lang == lang and not m.is_crisis]
        missed = [m.text for m in crisis if not check_message(m.text).crisis]
        alarms = sum(check_message(m.text).crisis for m in safe)
        out[lang] = (Rate(len(crisis) - len(missed), len(crisis)), Rate(alarms, len(safe)), missed)
    return out


def conversation_rates(split: str) -> tuple[Rate, Rate]:
    rows = load_conversations(split)
    crisis = [c for c in rows if c.is_crisis]
    safe = [c for c in rows if not c.is_crisis]
    caught = sum(check_conversation(list(c.messages)).crisis for c in crisis)
    alarms = sum(check_conversation(list(c.messages)).crisis for c in safe)
    return Rate(caught, len(crisis)), Rate(alarms, len(safe))


def latency_ms(repeats: int = 1) -> tuple[float, float]:
    """Median and 99th-percentile milliseconds for one message (model already loaded),
    over every message of the data set, ``repeats`` times; each as if seen for the first
    time (the remembered verdicts are forgotten before it)."""
    texts = [m.text for m in load_messages()]
    check_message(texts[0])
    times = []
    for _ in range(repeats):
        for text in texts:
            classifier_flags.cache_clear()
            start = time.perf_counter()
            check_message(text)
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)]


def markdown(split: str, rates: dict[str, tuple[Rate, Rate, list[str]]] | None = None) -> str:
    lines = [f"| language | recall ({split}) | false alarms ({split}) |", "|---|---|---|"]
    rates = rates or message_rates(split)
    for lang, (recall, false_alarms, _) in rates.items():
        lines.append(f"| {lang} | {recall.text()} | {false_alarms.text()} |")
    recall, false_alarms = conversation_rates(split)
    lines.append(f"| conversations | {recall.text()} | {false_alarms.text()} |")
    return "\n".join(lines)
