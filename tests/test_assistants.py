"""Assistants as data: the shipped files, an assistant of one's own, and bad files."""

from __future__ import annotations

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
