"""Chat data in the formats people have (OpenAI, ShareGPT, Alpaca) and `qtune data check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qtune.data.formats import RowProblem, to_messages

from qtune.cli import main

ANSWER = {"role": "assistant", "content": "Take a breath."}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_each_format_becomes_the_same_messages():
    user = {"role": "user", "content": "I feel tense."}
    openai = {"messages": [user, ANSWER]}
    sharegpt = {"conversations": [{"from": "human", "value": "I feel tense."},
                                  {"from": "gpt", "value": "Take a breath."}]}
    alpaca = {"instruction": "I feel tense.", "input": "", "output": "Take a breath."}
    assert to_messages(openai) == to_messages(sharegpt) == to_messages(alpaca) == [user, ANSWER]
    with_input = to_messages({"instruction": "Add.", "input": "2 and 3", "output": "5"})
    assert with_input[0]["content"] == "Add.\n\n2 and 3"


def test_a_system_prompt_in_the_data_is_kept_first():
    row = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}, ANSWER]}
    assert to_messages(row)[0] == {"role": "system", "content": "Be brief."}
    own = {"messages": [{"role": "developer", "content": "Be kind."},
                        {"role": "user", "content": "Hi"}, ANSWER], "system": "ignored"}
    assert [m["content"] for m in to_messages(own)][:1] == ["Be kind."]
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, ANSWER]}
    assert to_messages(parts)[0]["content"] == "Hi"


@pytest.mark.parametrize(("row", "problem"), [
    ({"messages": [{"role": "user", "content": "Hi"}]}, "no assistant message"),
    ({"messages": [{"role": "tool", "content": "x"}, ANSWER]}, "unknown role 'tool'"),
    ({"messages": [{"role": "user", "content": "  "}, ANSWER]}, "message 1 has empty text"),
    ({"conversations": [{"from": "bot", "value": "x"}]}, "unknown from 'bot'"),
    ({"instruction": "Say hi", "output": ""}, "'output' has empty text"),
    ({"prompt": "x", "completion": "y"}, "no chat found"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                   ANSWER]}, "system message may only come first"),
    (["not", "an", "object"], "expected a JSON object"),
])
def test_bad_rows_say_what_is_wrong(row, problem):
    with pytest.raises(RowProblem, match=problem):
        to_messages(row)


def test_check_names_every_bad_row_by_file_and_line(tmp_path, capsys):
    good = {"messages": [{"role": "user", "content": "Hi"}, ANSWER]}
    path = _jsonl(tmp_path / "chats.jsonl", [good, "{not json", good,
                                              {"messages": [{"role": "user", "content": "x"}]}])
    assert main(["data", "check", str(path), "--no-tokens"]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: not valid JSON" in out
    assert f"{path}:4: no assistant message" in out
    assert "2 good rows, 2 bad" in out and "not fit to train on" in out
    assert main(["data", "check", str(_jsonl(tmp_path / "ok.jsonl", [good])), "--no-tokens"]) == 0
    assert main(["data", "check", str(tmp_path / "missing.jsonl"), "--no-tokens"]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err


def test_check_counts_tokens_as_the_trainer_renders_them(tmp_path, embedded_model, capsys):
    from qtune.data.check import check_source
    from qtune.data.prompts import render_chat
    from qtune.data.sources import ChatSource
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    short = {"messages": [{"role": "user", "content": "Hi"}, ANSWER]}
    long = {"instruction": "Repeat.", "output": "word " * 300}
    path = _jsonl(tmp_path / "chats.jsonl", [short, short, long])
    report = check_source(ChatSource(str(path)), tokenizer=tokenizer, seq_len=64)
    rendered = render_chat(tokenizer, to_messages(long), add_generation_prompt=False)
    long_tokens = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert report.lengths[2] == long_tokens > 300
    assert report.cut == [(3, long_tokens - 64)]
    assert main(["data", "check", str(path), "--seq-len", "64",
                 "--model", str(embedded_model)]) == 0
    out = capsys.readouterr().out
    assert f"max {long_tokens}" in out and "1 rows are longer than seq_len 64" in out
