"""The chat-data formats people already have, read as OpenAI message lists.

* ``openai``: ``{"messages": [{"role": ..., "content": ...}, ...]}`` (OpenAI's fine-tuning
  files; ``content`` a string or a list of text parts; roles system, developer, user,
  assistant), with an optional top-level ``"system"``.
* ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}``
  (``user``/``assistant`` accepted too), with an optional top-level ``"system"``.
* ``alpaca``: ``{"instruction", "input" (optional), "output", "system" (optional)}``: one
  user turn (the instruction, then the input after a blank line) and one assistant turn.

Each row becomes ``[{"role", "content"}, ...]`` or a :class:`RowProblem` that says what is
wrong with it; the file reader adds the file and line.
"""

from __future__ import annotations

from typing import Any

FORMATS = ("openai", "sharegpt", "alpaca")
ROLES = ("system", "user", "assistant")
#: How each format names the roles.
ROLE_NAMES = {
    "openai": {"system": "system", "developer": "system", "user": "user",
               "assistant": "assistant"},
    "sharegpt": {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                 "assistant": "assistant"},
}


class RowProblem(ValueError):
    """What is wrong with one row (the reader prefixes the file and line)."""


def detect_format(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "openai"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    raise RowProblem(f"no chat found: expected a 'messages' list (openai), a 'conversations' "
                     f"list (sharegpt) or 'instruction' and 'output' (alpaca); keys: "
                     f"{', '.join(sorted(row)) or 'none'}")


def _text(value: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of text parts joined."""
    if isinstance(value, list):
        parts = [p.get("text") for p in value if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) != len(value) or not all(isinstance(p, str) for p in parts):
            raise RowProblem(f"{where} has content parts other than text")
        value = "".join(parts)
    if not isinstance(value, str):
        raise RowProblem(f"{where} has no text (content is {type(value).__name__})")
    if not value.strip():
        raise RowProblem(f"{where} has empty text")
    return value


def _turns(row: dict[str, Any], fmt: str) -> list[dict[str, str]]:
    key, role_key, text_key = {"openai": ("messages", "role", "content"),
                               "sharegpt": ("conversations", "from", "value")}[fmt]
    turns = row.get(key)
    if not isinstance(turns, list) or not turns:
        raise RowProblem(f"'{key}' must be a non-empty list")
    messages = []
    for number, turn in enumerate(turns, start=1):
        where = f"message {number}"
        if not isinstance(turn, dict):
            raise RowProblem(f"{where} is not an object")
        role = ROLE_NAMES[fmt].get(turn.get(role_key))
        if role is None:
            raise RowProblem(f"{where} has unknown {role_key} {turn.get(role_key)!r} (allowed: "
                             f"{', '.join(ROLE_NAMES[fmt])})")
        messages.append({"role": role, "content": _text(turn.get(text_key), where)})
    return messages


def _alpaca(row: dict[str, Any]) -> list[dict[str, str]]:
    instruction = _text(row.get("instruction"), "'instruction'")
    extra = row.get("input")
    user = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
    return [{"role": "user", "content": user},
            {"role": "assistant", "content": _text(row.get("output"), "'output'")}]


def to_messages(row: Any, fmt: str = "auto") -> list[dict[str, str]]:
    """One row as a message list; the row's own system prompt (a system message, or a
    top-level "system") comes first. Raises RowProblem."""
    if not isinstance(row, dict):
        raise RowProblem(f"expected a JSON object, got {type(row).__name__}")
    fmt = detect_format(row) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise RowProblem(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    messages = _alpaca(row) if fmt == "alpaca" else _turns(row, fmt)
    system = row.get("system")
    if system is not None and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": _text(system, "'system'")})
    if any(m["role"] == "system" for m in messages[1:]):
        raise RowProblem("a system message may only come first")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowProblem("no assistant message: nothing to learn from")
    return messages
