"""`qtune data check`: is a chat-data file fit to train on? Every bad row with its file and
line, then counts and token-length quantiles, as OpenAI's data-preparation tool prints
them; rows longer than the trainer's ``seq_len`` and how many tokens they lose."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtune.data.formats import RowProblem, read_chat_file

from qtune.errors import QtuneError

#: The problems printed in full; the rest are counted.
SHOWN_PROBLEMS = 50


@dataclass
class CheckReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    rows: int = 0
    assistant_turns: int = 0
    with_system: int = 0
    lengths: list[int] = field(default_factory=list)  # tokens per good row (when counted)
    cut: list[tuple[int, int]] = field(default_factory=list)  # (line, tokens past seq_len)

    @property
    def ok(self) -> bool:
        return not self.problems and self.rows > 0


def read_rows(path: Path, fmt: str) -> tuple[list[tuple[int, list[dict[str, str]]]], list[str]]:
    """((line, messages) of every good row, "file:line: problem" of every bad one)."""
    rows, problems = [], []
    try:
        for line, result in read_chat_file(path, fmt):
            if isinstance(result, RowProblem):
                problems.append(f"{path}:{line}: {result}")
            else:
                rows.append((line, result))
    except UnicodeDecodeError as error:
        raise QtuneError(f"{path} is not UTF-8 text ({error})") from error
    return rows, problems


def check_file(path: Path, fmt: str = "auto", tokenizer: Any = None,
               seq_len: int = 256) -> CheckReport:
    """Read every row of ``path``; with a tokenizer, render each as the trainer does."""
    from qtune.data.prompts import render_chat

    if not path.is_file():
        raise QtuneError(f"{path} is not a file")
    report = CheckReport(path)
    rows, report.problems = read_rows(path, fmt)
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


def load_chat_file(path: Path, fmt: str = "auto") -> list[list[dict[str, str]]]:
    """Every row as a message list, or a QtuneError naming the bad rows by file and line,
    as `qtune data check` prints them (training refuses a file with any bad row)."""
    if not path.is_file():
        raise QtuneError(f"chat data file {path} does not exist")
    rows, problems = read_rows(path, fmt)
    if problems:
        more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise QtuneError(f"{len(problems)} bad rows in {path} (`qtune data check {path}` "
                         "lists them all):\n" + "\n".join(problems[:10]) + more)
    if not rows:
        raise QtuneError(f"{path} holds no rows")
    return [messages for _, messages in rows]


def _quantiles(values: list[int]) -> str:
    import numpy as np

    marks = {"min": 0, "p5": 5, "median": 50, "p95": 95, "max": 100}
    return ", ".join(f"{name} {np.percentile(values, q):.0f}" for name, q in marks.items())


def report_text(report: CheckReport, seq_len: int) -> str:
    lines = [*report.problems[:SHOWN_PROBLEMS]]
    if len(report.problems) > SHOWN_PROBLEMS:
        lines.append(f"... and {len(report.problems) - SHOWN_PROBLEMS} more bad rows")
    lines.append(f"{report.path}: {report.rows} good rows, {len(report.problems)} bad; "
                 f"{report.assistant_turns} assistant turns (each one is learned from); "
                 f"{report.with_system} rows bring their own system prompt")
    if report.lengths:
        lines.append(f"tokens per row: {_quantiles(report.lengths)}")
        if report.cut:
            lost = sum(n for _, n in report.cut)
            lines.append(f"{len(report.cut)} rows are longer than seq_len {seq_len} and lose "
                         f"{lost} tokens in all (the end of the answer), e.g. line "
                         f"{report.cut[0][0]} loses {report.cut[0][1]}; raise --seq-len or "
                         "shorten them")
    if report.rows == 0 and not report.problems:
        lines.append("the file holds no rows")
    lines.append("ok" if report.ok else "not fit to train on: fix the rows above")
    return "\n".join(lines)
