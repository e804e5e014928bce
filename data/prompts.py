"""System prompts, chat messages and tokenisation for training with loss on answers only.

Everything here speaks OpenAI message lists (``[{"role": ..., "content": ...}]``): the
server, the UI and the trainer use the same system prompt for an assistant, so what a
model is trained on is what it sees when served.

Label masking renders growing prefixes of the conversation with the tokenizer's own
chat template and tokenises the pieces between them, so it works with templates that
lack ``{% generation %}`` markers (SmolLM2's among them). The piece that opens an
assistant turn (``<|im_start|>assistant\\n``) is tokenised on its own, exactly as the
prompt is at inference time, and the reply after it carries the labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtune.assistants import shipped_assistants
from qtune.errors import QtuneError
from qtune.vocab import ASSISTANTS, IGNORE_INDEX

from .datasets import CounselExample, Dialogue, MathExample

#: Each assistant's system prompt and the assistant each data set trains, read from the
#: assistant files (assistants/*.toml, qtune.assistants): one home for both.
SYSTEM_PROMPTS: dict[str, str] = {name: assistant.system_prompt
                                  for name, assistant in shipped_assistants().items()}
TASK_ASSISTANT: dict[str, str] = {task: assistant.name
                                  for assistant in shipped_assistants().values()
                                  for task in assistant.tasks}


def assistant_for(assistant_or_task: str) -> str:
    """The assistant name for an assistant or a dataset task ("cpsycound" -> "counselling")."""
    assistant = TASK_ASSISTANT.get(assistant_or_task)
    if assistant is None:
        raise QtuneError(
            f"unknown assistant {assistant_or_task!r}: choose one of {', '.join(ASSISTANTS)} "
            f"(or a task: {', '.join(TASK_ASSISTANT)})"
        )
    return assistant


def system_prompt(assistant: str) -> str:
    """The system prompt of ``assistant`` ("math" or "counselling")."""
    if assistant not in SYSTEM_PROMPTS:
        raise QtuneError(f"unknown assistant {assistant!r}: choose one of {', '.join(ASSISTANTS)}")
    return SYSTEM_PROMPTS[assistant]


def _history_messages(history: Sequence[Any]) -> list[dict[str, str]]:
    """Earlier turns as messages; accepts message dicts or (user, assistant) pairs."""
    messages: list[dict[str, str]] = []
    for turn in history:
        if isinstance(turn, dict):
            role, content = turn.get("role"), turn.get("content")
            if role == "system":
                continue  # the assistant's own system prompt replaces any other
            if role not in ("user", "assistant") or not isinstance(content, str):
                raise QtuneError(
                    f"history message {turn!r} needs role 'user' or 'assistant' and text content"
                )
            messages.append({"role": role, "content": content})
        elif isinstance(turn, (tuple, list)) and len(turn) == 2:
            user, reply = turn
            if user:
                messages.append({"role": "user", "content": str(user)})
            if reply:
                messages.append({"role": "assistant", "content": str(reply)})
        else:
            raise QtuneError(
                f"history entry {turn!r} is neither a message nor a (user, reply) pair"
            )
    return messages


def build_messages(
    assistant: str, user_text: str, history: Sequence[Any] | None = None
) -> list[dict[str, str]]:
    """System prompt, earlier turns, then the new user message, for a chat request."""
    return [
        {"role": "system", "content": system_prompt(assistant)},
        *_history_messages(history or ()),
        {"role": "user", "content": user_text},
    ]


def example_messages(
    assistant_or_task: str, example: MathExample | CounselExample | Dialogue
) -> list[dict[str, str]]:
    """A dataset record as a training conversation: system, user, assistant (all turns of
    a dialogue). Math targets are the worked solution without calculator notes."""
    assistant = assistant_for(assistant_or_task)
    system = {"role": "system", "content": system_prompt(assistant)}
    if assistant == "math" and isinstance(example, MathExample):
        return [
            system,
            {"role": "user", "content": example.question},
            {"role": "assistant", "content": example.solution_text},
        ]
    if assistant == "counselling" and isinstance(example, CounselExample):
        return [
            system,
            {"role": "user", "content": example.user_text},
            {"role": "assistant", "content": example.answer_text},
        ]
    if assistant == "counselling" and isinstance(example, Dialogue):
        turns = [dict(m) for m in example.messages if m["role"] != "system"]
        return [system, *turns]
    raise QtuneError(
        f"a {type(example).__name__} is not a training example for the {assistant} assistant"
    )


def render_chat(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """The conversation as the model sees it, through the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise QtuneError(
            f"the tokenizer of {getattr(tokenizer, 'name_or_path', 'this model')} has no chat "
            "template: use an instruct/chat model"
        )
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _answer_spans(
    tokenizer: Any, messages: list[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant reply in it
    (from the reply's first character through the end-of-turn token)."""
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:index], add_generation_prompt=True)
        through = render_chat(tokenizer, messages[: index + 1], add_generation_prompt=False)
        if not (full.startswith(before) and full.startswith(through)):
            raise QtuneError(
                "this tokenizer's chat template does not render a conversation as a growing "
                "prefix, so the answer tokens cannot be located for loss masking"
            )
        # The newline a template writes after the end-of-turn token belongs to the next turn.
        spans.append((len(before), len(through.rstrip())))
    if not spans:
        raise QtuneError("a training conversation needs at least one assistant message")
    return full, spans


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _truncate(ids: list[int], labels: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Keep the prompt and cut the answer; when the prompt alone is too long, keep its
    tail and the start of the first answer (a quarter of the window at most), so that
    every example still has tokens to learn from."""
    if len(ids) <= max_length:
        return ids, labels
    first_answer = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), None)
    if first_answer is None:
        return ids[-max_length:], labels[-max_length:]
    if first_answer < max_length:
        return ids[:max_length], labels[:max_length]
    answer_end = first_answer
    while answer_end < len(labels) and labels[answer_end] != IGNORE_INDEX:
        answer_end += 1
    answer_budget = min(answer_end - first_answer, max(1, max_length // 4))
    start = first_answer - (max_length - answer_budget)
    stop = first_answer + answer_budget
    return ids[start:stop], labels[start:stop]


def tokenize_for_training(
    tokenizer: Any, messages: list[dict[str, str]], max_length: int
) -> dict[str, list[int]]:
    """``input_ids`` of the rendered conversation and ``labels`` that are -100 everywhere but
    on the assistant replies (their end-of-turn token included), at most ``max_length`` long."""
    if max_length < 2:
        raise QtuneError(f"max_length must be at least 2 tokens, not {max_length}")
    full, spans = _answer_spans(tokenizer, messages)
    input_ids: list[int] = []
    labels: list[int] = []
    position = 0
    for start, end in spans:
        prompt_ids = _encode(tokenizer, full[position:start])
        answer_ids = _encode(tokenizer, full[start:end])
        input_ids += prompt_ids + answer_ids
        labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids
        position = end
    tail = _encode(tokenizer, full[position:])
    input_ids += tail
    labels += [IGNORE_INDEX] * len(tail)
    input_ids, labels = _truncate(input_ids, labels, max_length)
    return {"input_ids": input_ids, "labels": labels}
