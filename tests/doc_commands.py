"""The shell commands written in the README and docs, as a reader would copy them."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
INLINE = re.compile(r"`((?:qtune|make|python) [^`]+)`")
PROGRAMS = ("qtune", "make", "python")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    argv: tuple[str, ...]
    inline: bool  # in prose, where a command may be named without its required arguments

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


def _logical_lines(block: str) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined, and each one's offset in the block."""
    out, pending, start = [], "", 0
    for number, line in enumerate(block.splitlines()):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def _argv(line: str) -> tuple[str, ...] | None:
    line = re.sub(r"^\s*\$\s+", "", line)  # a console prompt
    line = re.sub(r"^(?:\w+=\S+\s+)+", "", line.strip())  # VAR=value prefixes
    line = re.sub(r"^(?:\.venv/bin/|\$\(BIN\)/)", "", line)
    if line.split(" ", 1)[0] not in PROGRAMS:
        return None
    line = re.sub(r"\[(--?[\w-]+)\]", r"\1", line)  # an optional flag written [--flag]
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    # Only the first command of a pipeline or a list.
    for index, word in enumerate(words):
        if word in ("|", "&&", ";", "||", ">", "2>&1", "&"):
            return tuple(words[:index])
    return tuple(words)


def documented_commands() -> list[Command]:
    """Every `qtune`, `make` and `python` command in a shell code block or inline code."""
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for fence in FENCE.finditer(text):
            if fence.group(1) not in SHELL_LANGUAGES:
                continue
            first_line = text.count("\n", 0, fence.start(2)) + 1
            for offset, line in _logical_lines(fence.group(2)):
                argv = _argv(line)
                if argv:
                    found.append(Command(f"{path.name}:{first_line + offset}", argv, False))
        prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for match in INLINE.finditer(prose):
            argv = _argv(match.group(1))
            if argv:
                line = text.count("\n", 0, match.start()) + 1
                found.append(Command(f"{path.name}:{line}", argv, True))
    return found
