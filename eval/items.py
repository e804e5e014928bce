"""Evaluation items: what is asked (the chat prompt) and what the answer is scored against."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qtune.errors import QtuneError

Record = dict[str, Any]


# --------------------------------------------------------------------------- items


@dataclass(frozen=True)
class EvalItem:
    """One evaluation item.

    ``messages`` is the prompt sent to the endpoint, ``reference`` what the reply is
    scored against (the GSM8K final number, or the reference counselling answer), and
    ``conversation`` the whole reference conversation as the trainer renders it (for
    teacher-forced scoring of its assistant turns).
    """

    id: str
    messages: tuple[dict[str, str], ...]
    question: str
    reference: str
    conversation: tuple[dict[str, str], ...] = ()


def item_id(index: int, text: str) -> str:
    """Stable id: position in the split plus a hash of the text, so a cache written
    from a different version of the data is not silently reused."""
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"{index:05d}-{digest}"


def _messages(
    assistant: str, user_text: str, history: Sequence[Any] = ()
) -> tuple[dict[str, str], ...]:
    from qtune.data.prompts import build_messages

    return tuple(build_messages(assistant, user_text, list(history)))


def math_items(split: str = "test", limit: int | None = None) -> list[EvalItem]:
    """GSM8K items (the whole test set by default; the first ``limit`` otherwise)."""
    from qtune.data.datasets import load_gsm8k

    return [
        EvalItem(
            item_id(i, ex.question), _messages("math", ex.question), ex.question, ex.final_answer
        )
        for i, ex in enumerate(load_gsm8k(split, limit=limit))
    ]


def counsel_items(
    dataset: str = "counselchat",
    split: str = "test",
    limit: int | None = None,
    best_only: bool = True,
) -> list[EvalItem]:
    """Counselling items: CounselChat questions with their (most upvoted) therapist answer,
    or CPsyCounD dialogues up to their last counsellor turn."""
    from qtune.data.datasets import load_counselchat, load_cpsycound
    from qtune.data.prompts import example_messages

    items = []
    if dataset == "counselchat":
        for i, ex in enumerate(load_counselchat(split, best_only=best_only, limit=limit)):
            items.append(
                EvalItem(
                    item_id(i, ex.user_text + ex.answer_text),
                    _messages("counselling", ex.user_text),
                    ex.user_text,
                    ex.answer_text,
                    tuple(example_messages("counselling", ex)),
                )
            )
    elif dataset == "cpsycound":
        for i, dialogue in enumerate(load_cpsycound(split, limit=limit)):
            turns = [m for m in dialogue.messages if m["role"] != "system"]
            last = max(j for j, m in enumerate(turns) if m["role"] == "assistant")
            if last < 1:
                continue  # a dialogue that opens with the counsellor has no prompt
            question = turns[last - 1]["content"]
            items.append(
                EvalItem(
                    item_id(i, dialogue.id),
                    _messages("counselling", question, turns[: last - 1]),
                    question,
                    turns[last]["content"],
                    tuple(example_messages("cpsycound", dialogue)),
                )
            )
    else:
        raise QtuneError(f"unknown counselling dataset {dataset!r}: use counselchat or cpsycound")
    return items
