"""`qtune data check`: is chat data fit to train on? Every bad row with its file and line
(or split and row), then counts and token-length quantiles, as OpenAI's data-preparation tool prints
them; rows longer than the trainer's ``seq_len`` and how many tokens they lose."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qtune.data.sources import ChatSource, read_rows

#: The problems printed in full; the rest are counted.
SHOWN_PROBLEMS = 50


@dataclass
class CheckReport:
    source: ChatSource
    problems: list[str] = field(default_factory=list)
    rows: int = 0
    assistant_turns: int = 0
    with_system: int = 0
    lengths: list[int] = field(default_factory=list)  # tokens per good row (when counted)
    cut: list[tuple[int, int]] = field(default_factory=list)  # (line, tokens past seq_len)

    @property
    def ok(self) -> bool:
        return not self.problems and self.rows > 0


def check_source(source: ChatSource, tokenizer: Any = None, seq_len: int = 256) -> CheckReport:
    """Read every row of ``source``; with a tokenizer, render each as the trainer does."""
    from qtune.data.prompts import render_chat

    report = CheckReport(source)
    rows, report.problems = read_rows(source)
    for line, messages in rows:
        report.rows += 1
        report.assistant_turns += sum(m["role"] == "assistant" for m in messages)
        report.with_system += messages[0]["role"] == "system"
        if tokenizer is not None:
            text = render_chat(tokenizer, messages, add_generation_prompt=False)
            length = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            report.lengths.append(length)
            if length > seq_len:
                report.cut.append((line, length - seq_len))
    return report


def _quantiles(values: list[int]) -> str:
    import numpy as np

    marks = {"min": 0, "p5": 5, "median": 50, "p95": 95, "max": 100}
    return ", ".join(f"{name} {np.percentile(values, q):.0f}" for name, q in marks.items())


def report_text(report: CheckReport, seq_len: int) -> str:
    lines = [*report.problems[:SHOWN_PROBLEMS]]
    if len(report.problems) > SHOWN_PROBLEMS:
        lines.append(f"... and {len(report.problems) - SHOWN_PROBLEMS} more bad rows")
    lines.append(f"{report.source.label}: {report.rows} good rows, {len(report.problems)} bad; "
                 f"{report.assistant_turns} assistant turns (each one is learned from); "
                 f"{report.with_system} rows bring their own system prompt")
    if report.lengths:
        lines.append(f"tokens per row: {_quantiles(report.lengths)}")
        if report.cut:
            lost = sum(n for _, n in report.cut)
            lines.append(f"{len(report.cut)} rows are longer than seq_len {seq_len} and lose "
                         f"{lost} tokens in all (the end of the answer), e.g. row "
                         f"{report.cut[0][0]} loses {report.cut[0][1]}; raise --seq-len or "
                         "shorten them")
    if report.rows == 0 and not report.problems:
        lines.append("the data holds no rows")
    lines.append("ok" if report.ok else "not fit to train on: fix the rows above")
    return "\n".join(lines)
