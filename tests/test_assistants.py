"""Assistants as data: the shipped files, an assistant of one's own, and bad files."""

from __future__ import annotations

import json

import pytest

from qtune import assistants
from qtune.assistants import AssistantConfig, get_assistant, shipped_assistants
from qtune.cli import main
from qtune.errors import QtuneError

OWN = '''name = "support"
title = "Support desk"
system_prompt = "You answer questions about our product, briefly."
evaluation = ["heldout_loss", "exact_match"]
'''


def test_the_shipped_assistants_are_their_files():
    from qtune.data.prompts import SYSTEM_PROMPTS, TASK_ASSISTANT

    from qtune.vocab import ASSISTANTS, CRISIS_SCREENED_TASKS

    shipped = shipped_assistants()
    assert ASSISTANTS == tuple(shipped) == ("math", "counselling")  # position decides
    assert {n: a.system_prompt for n, a in shipped.items()} == SYSTEM_PROMPTS
    assert SYSTEM_PROMPTS["math"].endswith("without units.")
    assert TASK_ASSISTANT == {"math": "math", "counselling": "counselling",
                              "cpsycound": "counselling"}
    assert CRISIS_SCREENED_TASKS == ("counselling", "cpsycound")


def test_an_assistant_of_ones_own_from_a_file(tmp_path):
    path = tmp_path / "support.toml"
    path.write_text(OWN)
    own = get_assistant(str(path))
    assert (own.name, own.title, own.tasks, own.crisis_screen) == (
        "support", "Support desk", (), False)
    assert own.evaluation == ("heldout_loss", "exact_match")


@pytest.mark.parametrize(("text", "problem"), [
    (OWN + "colour = 'red'\n", "unknown assistant setting.*colour"),
    ('title = "x"\nsystem_prompt = "y"\n', "name missing"),
    (OWN.replace('"support"', '"Support Desk"'), "must be lower-case"),
    (OWN.replace('"heldout_loss", ', ""), "evaluation must hold heldout_loss"),
    (OWN + "crisis_screen = 'yes'\n", "crisis_screen must be true or false"),
    (OWN.replace("You answer", ""), None),  # still text: fine
    ("name = \n", "not valid TOML"),
])
def test_a_bad_assistant_file_says_what_is_wrong(tmp_path, text, problem):
    path = tmp_path / "a.toml"
    path.write_text(text)
    if problem is None:
        assert get_assistant(str(path)).name == "support"
        return
    with pytest.raises(QtuneError, match=problem):
        get_assistant(str(path))


def test_one_task_trains_one_assistant(tmp_path, monkeypatch):
    for name, task in (("a", "math"), ("b", "math")):
        (tmp_path / f"{name}.toml").write_text(
            f'name = "{name}"\ntitle = "{name}"\nsystem_prompt = "p"\ntasks = ["{task}"]\n')
    monkeypatch.setattr(assistants, "ASSISTANTS_DIR", tmp_path)
    shipped_assistants.cache_clear()
    try:
        with pytest.raises(QtuneError, match="task 'math' trains both 'a' and 'b'"):
            shipped_assistants()
    finally:
        monkeypatch.undo()
        shipped_assistants.cache_clear()
    assert "math" in shipped_assistants()


def test_the_assistants_command(tmp_path, capsys):
    assert main(["assistants", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("math") and "crisis screen" in listed[1]
    path = tmp_path / "support.toml"
    path.write_text(OWN)
    assert main(["assistants", "show", str(path)]) == 0
    assert "title: Support desk" in capsys.readouterr().out
    assert main(["assistants", "show", "nobody"]) == 2
    assert "unknown assistant 'nobody'" in capsys.readouterr().err
    assert isinstance(get_assistant("math"), AssistantConfig)


# ----------------------------------------------------------------------------- training
def _support_assistant(tmp_path, rows: list[str]):
    (tmp_path / "chats.jsonl").write_text("".join(row + "\n" for row in rows))
    path = tmp_path / "support.toml"
    path.write_text(OWN + 'train = "chats.jsonl"\nformat = "alpaca"\n')
    return path


ROW = '{"instruction": "How do I reset my password, item %d?", "output": "Open Settings."}'


def test_a_shipped_assistant_names_its_task_and_refuses_another():
    from qtune.finetune.config import TrainConfig

    assert TrainConfig(assistant="counselling").task == "counselling"
    assert TrainConfig().task == "math"
    with pytest.raises(QtuneError, match="trains on tasks counselling, cpsycound, not task 'math'"):
        TrainConfig(assistant="counselling", task="math").validate()
    with pytest.raises(QtuneError, match="give --assistant FILE"):
        TrainConfig(task="chat").validate()


def test_bad_rows_are_refused_before_anything_loads_or_is_written(tmp_path):
    from qtune.finetune.config import TrainConfig

    path = _support_assistant(tmp_path, [ROW % 1, '{"instruction": "x", "output": ""}'])
    config = TrainConfig(assistant=str(path), output=str(tmp_path / "run"))
    assert config.task == "chat"
    with pytest.raises(QtuneError, match=r"(?s)1 bad rows.*chats.jsonl:2: 'output' has empty text"):
        config.validate()
    assert not (tmp_path / "run").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_an_own_assistant_trains_on_its_file_with_a_carved_held_out_slice(tmp_path,
                                                                          tiny_model_dir):
    import json

    from qtune.finetune.config import TrainConfig
    from qtune.finetune.train import train

    from qtune.assistants import adapter_system_prompt

    path = _support_assistant(tmp_path, [ROW % i for i in range(12)])
    run = tmp_path / "run"
    config = TrainConfig.from_dict(dict(
        assistant=str(path), method="lora", base_model=str(tiny_model_dir), steps=2,
        batch_size=2, seq_len=64, warmup=1, eval_every=0, eval_batches=1, save_every=0,
        output=str(run))).validate()
    metrics = train(config)
    assert metrics["assistant"] == {"name": "support", "title": "Support desk",
                                    "system_prompt": get_assistant(str(path)).system_prompt,
                                    "crisis_screen": False}
    held_out = metrics["held_out"]
    assert held_out["eval_split"] == "carved from train" and held_out["heldout_rows"] == 2
    again = TrainConfig.from_dict({**config.to_dict(), "output": str(tmp_path / "again")})
    from qtune.finetune.batches import fingerprint, run_records

    assert fingerprint(run_records(again)[1]) == held_out["heldout_fingerprint"]  # fixed slice
    assert len(run_records(again)[0]) == 10
    assert held_out["train_rows"] == 10
    assert held_out["train_fingerprint"] == fingerprint(run_records(again)[0])
    assert json.loads((run / "training_config.json").read_text())["task"] == "chat"
    assert "You answer questions about our product" in (run / "README.md").read_text()
    assert adapter_system_prompt(run) == get_assistant(str(path)).system_prompt


def test_an_unknown_chat_format_is_refused_before_training(tmp_path):
    from qtune.finetune.config import TrainConfig

    path = _support_assistant(tmp_path, [ROW % 1, ROW % 2])
    path.write_text(path.read_text().replace('format = "alpaca"', 'format = "csv"'))
    with pytest.raises(QtuneError, match="unknown chat format 'csv'"):
        TrainConfig(assistant=str(path)).validate()


#: sha256 (first 16 hex) of [input_ids, labels] of the first rows of each shipped data set,
#: seq_len 256, computed with the loaders of commit 762ef93, before assistants were files.
TOKEN_DIGESTS = {
    "math/train/0": "8172aeac91a58518", "math/train/1": "5df03ca3e766eca5",
    "math/train/2": "1afa3163cac766df", "math/dev/0": "79eaa163b7ea955e",
    "math/dev/1": "64b3f3e74d3db799", "math/dev/2": "2cbfdf7d9735a630",
    "counselling/train/0": "339cb0f5241a003d", "counselling/train/1": "b8776184b2d149bd",
    "counselling/train/2": "871bd6f489c18790", "counselling/validation/0": "b8776184b2d149bd",
    "counselling/validation/1": "858abff8f1c81c74",
    "counselling/validation/2": "dcf0df135906fc50",
    "cpsycound/train/0": "be6aaa90ed30c599", "cpsycound/train/1": "5e1eee5174039447",
    "cpsycound/train/2": "e63b9afc401fc5cc",
}


def test_the_shipped_assistants_train_on_the_same_tokens_and_labels(embedded_model, data_dir):
    import hashlib

    from qtune.finetune.batches import load_records, tokenize_record
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    found = {}
    for key in TOKEN_DIGESTS:
        task, split, index = key.split("/")
        record = load_records(task, split)[int(index)]
        tokens = tokenize_record(tokenizer, task, record, 256)
        payload = json.dumps([list(tokens["input_ids"]), list(tokens["labels"])]).encode()
        found[key] = hashlib.sha256(payload).hexdigest()[:16]
    assert found == TOKEN_DIGESTS
