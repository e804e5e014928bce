"""System prompts, chat messages and answer-only label masking with the real SmolLM2 tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from qtune.data.datasets import load_counselchat, load_cpsycound, load_gsm8k
from qtune.data.prompts import (
    ASSISTANTS,
    IGNORE_INDEX,
    SYSTEM_PROMPTS,
    build_messages,
    example_messages,
    render_chat,
    system_prompt,
    tokenize_for_training,
)

from qtune.errors import QtuneError


@pytest.fixture(scope="module")
def tokenizer(embedded_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedded_model))


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _labelled(result: dict[str, list[int]]) -> list[int]:
    return [label for label in result["labels"] if label != IGNORE_INDEX]


# ----------------------------------------------------------------------------- messages


def test_system_prompts() -> None:
    assert ASSISTANTS == ("math", "counselling")
    assert "#### <number>" in system_prompt("math")
    counselling = system_prompt("counselling").lower()
    for promise in ("judgement", "feelings", "diagnose", "professional", "crisis line"):
        assert promise in counselling
    with pytest.raises(QtuneError, match="math, counselling"):
        system_prompt("poetry")


def test_build_messages_puts_system_first_and_keeps_history() -> None:
    history = [
        {"role": "system", "content": "ignored: the assistant's prompt wins"},
        {"role": "user", "content": "I feel low."},
        {"role": "assistant", "content": "I'm sorry to hear that."},
    ]
    messages = build_messages("counselling", "It started last week.", history)
    assert messages == [
        {"role": "system", "content": SYSTEM_PROMPTS["counselling"]},
        {"role": "user", "content": "I feel low."},
        {"role": "assistant", "content": "I'm sorry to hear that."},
        {"role": "user", "content": "It started last week."},
    ]
    pairs = build_messages("math", "And 3+3?", [("1+1?", "#### 2")])
    assert [m["role"] for m in pairs] == ["system", "user", "assistant", "user"]
    assert build_messages("math", "2+2?") == [
        {"role": "system", "content": SYSTEM_PROMPTS["math"]},
        {"role": "user", "content": "2+2?"},
    ]
    with pytest.raises(QtuneError, match="unknown assistant"):
        build_messages("chef", "hi")
    with pytest.raises(QtuneError, match="role 'user' or 'assistant'"):
        build_messages("math", "hi", [{"role": "tool", "content": "x"}])


def test_example_messages_for_each_dataset(data_dir: Path) -> None:
    problem = load_gsm8k("test", data_dir=data_dir, limit=1)[0]
    math = example_messages("math", problem)
    assert [m["role"] for m in math] == ["system", "user", "assistant"]
    assert math[1]["content"] == problem.question
    assert math[2]["content"] == problem.solution_text
    assert "<<" not in math[2]["content"] and math[2]["content"].endswith("#### 18")

    answer = load_counselchat("test", data_dir=data_dir, limit=1)[0]
    counsel = example_messages("counselling", answer)
    assert counsel[0]["content"] == SYSTEM_PROMPTS["counselling"]
    assert counsel[1:] == [
        {"role": "user", "content": answer.user_text},
        {"role": "assistant", "content": answer.answer_text},
    ]

    dialogue = load_cpsycound("test", data_dir=data_dir, limit=1)[0]
    turns = example_messages("cpsycound", dialogue)
    assert turns[0] == {"role": "system", "content": SYSTEM_PROMPTS["counselling"]}
    assert turns[1:] == dialogue.messages

    with pytest.raises(QtuneError, match="not a training example for the math"):
        example_messages("math", answer)
    with pytest.raises(QtuneError, match="unknown assistant"):
        example_messages("poetry", problem)


# ----------------------------------------------------------------------------- tokenizer


def test_render_chat_uses_the_template(tokenizer) -> None:
    messages = build_messages("math", "What is 2+2?")
    prompt = render_chat(tokenizer, messages, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\n" + SYSTEM_PROMPTS["math"])
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert not render_chat(tokenizer, messages, add_generation_prompt=False).endswith("assistant\n")


def test_labels_cover_exactly_the_answer(tokenizer, data_dir: Path) -> None:
    problem = load_gsm8k("test", data_dir=data_dir, limit=1)[0]
    messages = example_messages("math", problem)
    result = tokenize_for_training(tokenizer, messages, max_length=1024)
    ids, labels = result["input_ids"], result["labels"]
    assert len(ids) == len(labels)
    # the same tokens as the whole rendered conversation, so nothing is lost or added
    assert ids == _encode(tokenizer, render_chat(tokenizer, messages, False))
    # the prompt as served is exactly the unlabelled head
    prompt_ids = _encode(tokenizer, render_chat(tokenizer, messages[:-1], True))
    assert ids[: len(prompt_ids)] == prompt_ids
    assert all(label == IGNORE_INDEX for label in labels[: len(prompt_ids)])
    assert tokenizer.decode(_labelled(result)) == problem.solution_text + "<|im_end|>"
    # labels equal the input ids where they are set (the model shifts them itself)
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels, strict=True))


def test_multi_turn_labels_only_assistant_turns(tokenizer, data_dir: Path) -> None:
    dialogue = load_cpsycound("test", data_dir=data_dir, limit=1)[0]
    messages = example_messages("cpsycound", dialogue)
    result = tokenize_for_training(tokenizer, messages, max_length=8192)
    assert result["input_ids"] == _encode(tokenizer, render_chat(tokenizer, messages, False))
    replies = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    # each maximal labelled run decodes to one assistant reply
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in result["labels"]:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    assert [tokenizer.decode(run) for run in runs] == replies


def test_truncation_keeps_the_prompt_and_cuts_the_answer(tokenizer, data_dir: Path) -> None:
    problem = load_gsm8k("test", data_dir=data_dir, limit=1)[0]
    messages = example_messages("math", problem)
    full = tokenize_for_training(tokenizer, messages, max_length=4096)
    prompt_length = next(i for i, x in enumerate(full["labels"]) if x != IGNORE_INDEX)
    max_length = prompt_length + 5
    cut = tokenize_for_training(tokenizer, messages, max_length=max_length)
    assert cut["input_ids"] == full["input_ids"][:max_length]
    assert len(_labelled(cut)) == 5


def test_overlong_prompt_keeps_its_tail_and_some_answer(tokenizer) -> None:
    messages = build_messages("counselling", "I keep worrying. " * 200) + [
        {"role": "assistant", "content": "That sounds exhausting. What helps you rest?"}
    ]
    full = tokenize_for_training(tokenizer, messages, max_length=100_000)
    result = tokenize_for_training(tokenizer, messages, max_length=64)
    ids, labels = result["input_ids"], result["labels"]
    assert len(ids) == len(labels) == 64
    answer = _labelled(full)
    kept = _labelled(result)
    assert 0 < len(kept) <= 16 and kept == answer[: len(kept)]
    # the window is a contiguous slice of the full sequence ending inside the answer
    first_answer = next(i for i, x in enumerate(full["labels"]) if x != IGNORE_INDEX)
    start = first_answer - (64 - len(kept))
    assert ids == full["input_ids"][start : start + 64]


def test_training_needs_an_answer_and_room(tokenizer) -> None:
    with pytest.raises(QtuneError, match="at least one assistant message"):
        tokenize_for_training(tokenizer, build_messages("math", "2+2?"), max_length=64)
    with pytest.raises(QtuneError, match="at least 2"):
        tokenize_for_training(tokenizer, build_messages("math", "2+2?"), max_length=1)
