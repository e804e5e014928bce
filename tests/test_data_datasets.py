"""Dataset loaders on the real local data, and their errors on broken files."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
from qtune.data import datasets
from qtune.data.answers import answers_match, normalize_number
from qtune.data.datasets import (
    GSM8K_DEV_SIZE,
    CounselExample,
    Dialogue,
    MathExample,
    load_counselchat,
    load_cpsycound,
    load_gsm8k,
    load_task,
)

from qtune.errors import QtuneError


def _write_jsonl(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- real data


def test_gsm8k_counts_and_dev_slice(data_dir: Path) -> None:
    train = load_gsm8k("train", data_dir=data_dir)
    dev = load_gsm8k("dev", data_dir=data_dir)
    test = load_gsm8k("test", data_dir=data_dir)
    assert (len(train), len(dev), len(test)) == (7473 - GSM8K_DEV_SIZE, GSM8K_DEV_SIZE, 1319)
    # dev is the last rows of the train file and never overlaps train
    lines = (data_dir / "math/gsm8k/train.jsonl").read_text(encoding="utf-8").splitlines()
    assert dev[-1].question == json.loads(lines[-1])["question"].strip()
    assert dev[0].question == json.loads(lines[-GSM8K_DEV_SIZE])["question"].strip()
    assert not {e.question for e in train} & {e.question for e in dev}
    assert load_gsm8k("validation", data_dir=data_dir) == dev


def test_gsm8k_final_answers_and_targets(data_dir: Path) -> None:
    examples = load_gsm8k("train", data_dir=data_dir) + load_gsm8k("test", data_dir=data_dir)
    first = examples[0]
    assert isinstance(first, MathExample)
    assert first.final_answer == "72"
    assert "<<" in first.solution and "<<" not in first.solution_text
    assert first.solution_text.endswith("#### 72")
    for example in examples:
        assert normalize_number(example.final_answer) == example.final_answer
        assert "," not in example.final_answer
        assert "<<" not in example.solution_text
        # the extractor reads the training target back to the gold answer
        assert answers_match(example.solution_text, example.final_answer), example


def test_gsm8k_answers_with_thousands_commas(data_dir: Path) -> None:
    raw = [
        json.loads(line)
        for line in (data_dir / "math/gsm8k/test.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    examples = load_gsm8k("test", data_dir=data_dir)
    with_commas = [
        (row, ex)
        for row, ex in zip(raw, examples, strict=True)
        if "," in row["answer"].rsplit("####", 1)[1]
    ]
    assert with_commas, "GSM8K test has answers such as '#### 1,080'"
    for row, example in with_commas:
        assert example.final_answer == row["answer"].rsplit("####", 1)[1].strip().replace(",", "")


def test_counselchat_counts(data_dir: Path) -> None:
    for split, questions, answers in (
        ("train", 695, 1839),
        ("validation", 81, 173),
        ("test", 39, 117),
    ):
        best = load_counselchat(split, data_dir=data_dir)
        everything = load_counselchat(split, best_only=False, data_dir=data_dir)
        assert (len(best), len(everything)) == (questions, answers)
        assert len({e.question_id for e in best}) == questions
        assert all(e.answer_rank == 0 for e in best)
        # the best answer is the most upvoted one of its question
        top = {}
        for e in everything:
            top[e.question_id] = max(top.get(e.question_id, 0), e.upvotes)
        assert all(e.upvotes == top[e.question_id] for e in best)
    assert load_counselchat("dev", data_dir=data_dir) == load_counselchat(
        "validation", data_dir=data_dir
    )


def test_counselchat_records(data_dir: Path) -> None:
    example = load_counselchat("train", data_dir=data_dir, limit=1)[0]
    assert isinstance(example, CounselExample)
    assert example.user_text and example.answer_text and example.topic
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.answer = "changed"  # type: ignore[misc]
    # the scraper glued sentences together ("with.Seriously"); answer_text separates them
    glued = [e for e in load_counselchat("train", data_dir=data_dir) if ".Seriously" in e.answer]
    assert glued and ". Seriously" in glued[0].answer_text


def test_cpsycound_dialogues(data_dir: Path) -> None:
    train = load_cpsycound("train", data_dir=data_dir)
    test = load_cpsycound("test", data_dir=data_dir)
    assert (len(train), len(test)) == (2926, 158)
    assert not {d.id for d in train} & {d.id for d in test}
    dialogue = test[0]
    assert isinstance(dialogue, Dialogue)
    roles = [m["role"] for m in dialogue.messages]
    assert roles[0] == "user" and roles[-1] == "assistant"
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), "turns alternate"


def test_load_task_limit_and_env_folder(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QTUNE_DATA_DIR", str(data_dir))
    assert len(load_task("math", "test", limit=5)) == 5
    assert (
        load_task("counselling", "test", limit=3) == load_counselchat("test", data_dir=data_dir)[:3]
    )
    assert len(load_task("counselling", "test", best_only=False)) == 117
    assert load_task("cpsycound", "test", limit=0) == []


def test_hub_counselchat_ranking_matches_local_split(data_dir: Path) -> None:
    """The Hub copy has the original column names (and a split column where present):
    rebuilt from the local rows, shuffled, it must give the same best answers."""
    hub_split = {"train": "train", "validation": "val", "test": "test"}
    records = [
        {
            "questionID": e.question_id,
            "questionTitle": e.title,
            "questionText": e.question,
            "answerText": e.answer,
            "topic": e.topic,
            "upvotes": e.upvotes,
            "split": hub_split[split],
        }
        for split in hub_split
        for e in load_counselchat(split, best_only=False, data_dir=data_dir)
    ]
    random.Random(0).shuffle(records)
    rows = list(datasets._rank_hub_counsel_records(records, "validation", "hub"))
    best = [datasets._counsel_example(row) for row in rows if row.data["answer_rank"] == 0]
    local = load_counselchat("validation", data_dir=data_dir)
    assert len(rows) == 173
    assert {e.question_id for e in best} == {e.question_id for e in local}
    local_top = {e.question_id: e.upvotes for e in local}
    assert all(e.upvotes == local_top[e.question_id] for e in best)


# ----------------------------------------------------------------------------- errors


def test_missing_file_names_it_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(QtuneError) as error:
        load_gsm8k("test", data_dir=tmp_path)
    assert str(tmp_path / "math/gsm8k/test.jsonl") in str(error.value)
    assert "QTUNE_DATA_DIR" in str(error.value)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(QtuneError, match="QTUNE_DATA_DIR"):
        load_counselchat("train", data_dir=tmp_path / "nowhere")


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "math/gsm8k/test.jsonl"
    good = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})
    _write_jsonl(path, [good, "", '{"question": "broken"'])
    with pytest.raises(QtuneError) as error:
        load_gsm8k("test", data_dir=tmp_path)
    assert f"{path} line 3" in str(error.value) and "JSON" in str(error.value)


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "math/gsm8k/test.jsonl"
    good = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})
    path.parent.mkdir(parents=True)
    path.write_bytes(good.encode() + b"\n" + b'{"question": "caf\xe9"}\n')
    with pytest.raises(QtuneError, match=rf"{path} line 2: not UTF-8 text"):
        load_gsm8k("test", data_dir=tmp_path)


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "counselling/counselchat/train.jsonl"
    row = {
        "question_id": 1,
        "title": "t",
        "question": "q",
        "answer": "a",
        "topic": "x",
        "upvotes": 0,
        "answer_rank": 0,
    }
    broken = {k: v for k, v in row.items() if k != "answer"}
    _write_jsonl(path, [json.dumps(row), json.dumps(broken)])
    with pytest.raises(QtuneError) as error:
        load_counselchat("train", data_dir=tmp_path)
    message = str(error.value)
    assert f"{path} line 2" in message and "missing field 'answer'" in message


def test_gsm8k_answer_without_final_line(tmp_path: Path) -> None:
    path = tmp_path / "math/gsm8k/test.jsonl"
    _write_jsonl(path, [json.dumps({"question": "1+1?", "answer": "it is 2"})])
    with pytest.raises(QtuneError, match=r"line 1: .*'#### <number>'"):
        load_gsm8k("test", data_dir=tmp_path)


def test_bad_dialogue_message(tmp_path: Path) -> None:
    path = tmp_path / "counselling/cpsycound/test.jsonl"
    bad = {"id": "case_1", "messages": [{"role": "user", "content": "hi"}, {"role": "bot"}]}
    _write_jsonl(path, [json.dumps(bad)])
    with pytest.raises(QtuneError, match=r"line 1: message 1 needs a 'role'"):
        load_cpsycound("test", data_dir=tmp_path)


def test_unknown_split_and_task_list_the_valid_ones(data_dir: Path) -> None:
    with pytest.raises(QtuneError, match="train, dev, test"):
        load_gsm8k("validate", data_dir=data_dir)
    with pytest.raises(QtuneError, match="train, test"):
        load_cpsycound("dev", data_dir=data_dir)
    with pytest.raises(QtuneError, match="math, counselling, cpsycound"):
        load_task("poetry", "train", data_dir=data_dir)


def test_cpsycound_needs_a_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QTUNE_DATA_DIR", raising=False)
    with pytest.raises(QtuneError, match="QTUNE_DATA_DIR"):
        load_cpsycound("train")
