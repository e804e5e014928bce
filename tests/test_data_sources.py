"""Chat data beyond JSONL: Parquet, CSV, `datasets` folders and Hub ids, a column mapping
and splits, as `qtune data check` and training read them (qtune.data.sources)."""

from __future__ import annotations

import json

import pytest
from qtune.data.sources import ChatSource, assistant_sources, load_chat_source, read_rows

from qtune.assistants import read_assistant
from qtune.cli import main
from qtune.errors import QtuneError

QA = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]
MAPPING = {"instruction": "question", "output": "answer"}
EXPECTED = [[{"role": "user", "content": f"What is {i} + 1?"},
             {"role": "assistant", "content": str(i + 1)}] for i in range(6)]


def _dataset_dict(folder, train=QA, validation=QA[:2]):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(train),
                          "validation": datasets.Dataset.from_list(validation)}
                         ).save_to_disk(str(folder))
    return folder


def test_a_parquet_and_a_csv_file_with_a_column_mapping(tmp_path):
    import pandas as pd

    frame = pd.DataFrame(QA)
    frame.to_parquet(tmp_path / "qa.parquet")
    frame.to_csv(tmp_path / "qa.csv", index=False)
    for name in ("qa.parquet", "qa.csv"):
        source = ChatSource(str(tmp_path / name), columns=MAPPING)
        assert load_chat_source(source) == EXPECTED


def test_a_saved_datasets_folder_by_split(tmp_path):
    folder = _dataset_dict(tmp_path / "qa")
    assert load_chat_source(ChatSource(str(folder), columns=MAPPING)) == EXPECTED
    held_out = load_chat_source(ChatSource(str(folder), columns=MAPPING, split="validation"))
    assert held_out == EXPECTED[:2]
    with pytest.raises(QtuneError, match="has no split 'test'.*train, validation"):
        load_chat_source(ChatSource(str(folder), columns=MAPPING, split="test"))


def test_a_datasets_folder_of_data_files(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QA))
    assert load_chat_source(ChatSource(str(folder), columns=MAPPING)) == EXPECTED


def test_a_mapped_column_that_is_missing_is_named_by_row(tmp_path):
    folder = _dataset_dict(tmp_path / "qa")
    rows, problems = read_rows(ChatSource(str(folder), columns={"output": "reply",
                                                                 "instruction": "question"}))
    assert rows == [] and len(problems) == 6
    assert problems[0].startswith(f"{folder}[train]:1: no column 'reply'")


def test_a_mapping_of_an_unknown_key_or_a_missing_source_is_refused(tmp_path):
    with pytest.raises(QtuneError, match="unknown key.*answer_text"):
        ChatSource(str(tmp_path), columns={"answer_text": "a"}).check()
    with pytest.raises(QtuneError, match="does not exist"):
        ChatSource(str(tmp_path / "nowhere.parquet")).check()


def test_a_hub_id_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QtuneError, match="could not load someone/support-chats"):
        load_chat_source(ChatSource("someone/support-chats"))


def test_an_assistant_file_names_its_columns_and_splits(tmp_path, capsys):
    _dataset_dict(tmp_path / "qa")
    path = tmp_path / "qa.toml"
    path.write_text('name = "qa"\ntitle = "Q&A"\nsystem_prompt = "Answer."\ntrain = "qa"\n'
                    'validation_split = "validation"\n'
                    'columns = {instruction = "question", output = "answer"}\n')
    assistant = read_assistant(path)
    train, validation = assistant_sources(assistant)
    assert (train.split, validation.split, validation.location) == (
        "train", "validation", str(tmp_path / "qa"))
    assert main(["data", "check", str(path), "--no-tokens"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'qa'}[train]: 6 good rows" in out
    assert f"{tmp_path / 'qa'}[validation]: 2 good rows" in out
    # the same data named on the command line, with the mapping as flags
    assert main(["data", "check", str(tmp_path / "qa"), "--no-tokens", "--split", "validation",
                 "--column", "instruction=question", "--column", "output=answer"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path / "qa"), "--no-tokens"]) == 1  # no mapping
    assert "0 good rows, 6 bad" in capsys.readouterr().out
    path.write_text(path.read_text().replace('instruction = "question"', 'prompt = "question"'))
    with pytest.raises(QtuneError, match="columns maps unknown key"):
        read_assistant(path)
