"""Documentation keeps up with the code, as Datasette's docs tests check: every QTUNE_*
variable the code reads is in docs/configuration.md, every command is in the README or
docs, and docs/architecture.md names every part."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qtune.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
SOURCES = [*REPO.glob("*/**/*.py"), *REPO.glob("scripts/*.sh"), REPO / "Makefile",
           REPO / "Dockerfile", *REPO.glob("docker/*")]
VARIABLE = re.compile(r"\bQTUNE_[A-Z][A-Z_]*\b")


def read_variables() -> set[str]:
    found = set()
    for path in SOURCES:
        if ".venv" in path.parts or "tests" in path.parts or not path.is_file():
            continue
        found |= set(VARIABLE.findall(path.read_text(errors="replace")))
    return found


def documented_variables() -> set[str]:
    text = (REPO / "docs" / "configuration.md").read_text()
    return set(re.findall(r"^\| `(QTUNE_[A-Z_]+)` \|", text, flags=re.MULTILINE))


def test_every_environment_variable_is_documented():
    read = read_variables()
    assert {"QTUNE_HOME", "QTUNE_HOST", "QTUNE_RUNS_DIR"} <= read  # the scan finds them
    assert sorted(read - documented_variables()) == []


def test_no_documented_variable_is_stale():
    assert sorted(documented_variables() - read_variables()) == []


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(set(action.choices))


@pytest.mark.parametrize("command", subcommands())
def test_every_command_is_documented(command):
    docs = "\n".join(p.read_text() for p in [REPO / "README.md", *REPO.glob("docs/*.md")])
    assert f"qtune {command}" in docs


def test_architecture_names_every_part():
    text = (REPO / "docs" / "architecture.md").read_text()
    for part in ("qtune/", "data/", "finetune/", "eval/", "serve/", "ui/", "feedback/",
                 "study/"):
        assert f"`{part}" in text, part


def test_every_study_method_is_described_and_every_design_documented():
    from qtune.study.config import METHOD_NOTES, STUDY_METHODS, StudyConfig

    assert set(METHOD_NOTES) == set(STUDY_METHODS)  # the report describes every method
    method_doc = (REPO / "docs" / "method.md").read_text()
    designs = StudyConfig.from_toml(REPO / "studies" / "designs.toml")
    for method in set(designs.methods) - set(designs.compare_to):  # the references aside
        assert f"`{method}`" in method_doc, method


def test_no_markdown_file_holds_control_characters():
    # A "\t" or "\a" written into a Python string by mistake turns "\frac{\alpha}" into a
    # tab and a bell: the formula then renders as garbage.
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        text = path.read_text()
        bad = sorted({hex(ord(c)) for c in text if ord(c) < 32 and c != "\n"})
        assert not bad, f"{path.name}: {bad}"


def test_every_study_setting_is_documented():
    from dataclasses import fields

    from qtune.study.config import StudyConfig

    text = (REPO / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text.split("## Study files")[1],
                                flags=re.MULTILINE))
    assert documented == {f.name for f in fields(StudyConfig)}
