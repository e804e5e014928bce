"""Documentation keeps up with the code, as Datasette's docs tests check: every QTUNE_*
variable the code reads is in docs/configuration.md, every command is in the README or
docs, and docs/architecture.md names every part."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from doc_commands import Command, documented_commands

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


# ----------------------------------------------------------------------------- commands
def _parse_error(argv: tuple[str, ...]) -> str | None:
    """What argparse says of ``qtune ARGV`` (None: it parses)."""
    import contextlib
    import io

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(list(argv))
    except SystemExit as stop:
        if stop.code:
            return errors.getvalue().strip().splitlines()[-1]
    return None


MAKE_TARGETS = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))


@pytest.mark.parametrize("command", documented_commands(), ids=str)
def test_every_documented_command_runs_as_written(command: Command) -> None:
    """Commands in code blocks parse as written; commands named in prose may leave out
    their required arguments but use no unknown subcommand or option. Make targets exist,
    and scripts run with python exist."""
    program, args = command.argv[0], command.argv[1:]
    if program == "make":
        targets = [a for a in args if "=" not in a and not a.startswith("-")]
        assert set(targets) <= MAKE_TARGETS, f"{command}: no such make target"
    elif program == "python":
        script = next((a for a in args if a.endswith(".py")), None)
        assert script is None or any(REPO.glob(script)), f"{command}: no such script"
    else:
        error = _parse_error(args)
        if command.inline and error and "arguments are required" in error:
            return
        assert error is None, f"{command}: {error}"


def test_the_command_scan_finds_commands() -> None:
    found = documented_commands()
    assert len(found) > 100
    assert any(c.argv[:2] == ("qtune", "finetune") and not c.inline for c in found)
    assert _parse_error(("finetune", "--no-such-option")) is not None  # the check can fail


# ----------------------------------------------------------------------------- options
def _parser_of(*path: str):
    import argparse

    parser = build_parser()
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def options_of(*path: str) -> set[str]:
    """The long options of ``qtune PATH`` (and ``--`` where it passes arguments on)."""
    import argparse

    found = set()
    for action in _parser_of(*path)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        found |= {o for o in action.option_strings if o.startswith("--")}
        if (action.metavar or "").startswith("-- "):  # arguments passed on after `--`
            found.add("--")
    return found


def table_options(document: str, after: str) -> set[str]:
    """The options named in the first column of the first table after ``after``; a table
    broken by a paragraph ends there, so its second half counts as missing."""
    text = (REPO / "docs" / document).read_text().split(after, 1)[1]
    lines = text[text.index("\n|"):].lstrip("\n").splitlines()
    end = next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))
    rows = lines[:end]
    return {name for row in rows[2:] for name in re.findall(r"`(--[\w-]*)", row.split("|")[1])}


def test_the_option_tables_of_serve_ui_and_up_are_whole():
    serve, ui, up = options_of("serve"), options_of("ui"), options_of("up")
    serve_table = table_options("serving.md", "## Options")
    assert serve_table == serve
    ui_table = table_options("ui.md", "# The web UI")
    assert sorted(ui - ui_table) == []
    assert sorted(up - ui_table - serve_table) == []
    assert sorted((ui_table | serve_table) - ui - serve - up) == []  # nothing stale


def test_the_command_reference_is_generated_from_the_code():
    from qtune.cli_reference import render

    assert (REPO / "docs" / "cli.md").read_text() == render(), (
        "docs/cli.md is stale: run `make docs`")


def test_every_option_explains_itself():
    import argparse

    from qtune.cli_reference import _commands

    for path, parser, _ in _commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{' '.join(path)} {action.option_strings or action.dest}: no help"


def test_every_training_setting_has_a_flag_and_a_documented_row():
    from qtune.finetune.flags import flag_name, setting_sections

    from qtune.cli_reference import TABLE_DOCS, with_tables

    for doc in TABLE_DOCS:
        text = doc.read_text()
        assert text == with_tables(text, doc), f"{doc.name}'s tables are stale: run `make docs`"
    flags, keys = options_of("finetune"), []
    for _, config_class, names, _, docs in setting_sections():
        for name in names:
            assert flag_name(config_class, name) in flags, name
            assert docs[name], f"{config_class.__name__}.{name} has no docstring"
            keys.append(name)
    from qtune.finetune.config import TrainConfig

    assert set(TrainConfig(method="lora").to_dict()) <= set(keys)
    assert {"n_qubits", "d_initial"} <= set(keys)  # QWTH's and VeRA's own settings


def test_every_key_of_an_assistant_file_is_documented():
    import dataclasses

    from qtune.assistants import AssistantConfig

    text = (REPO / "docs" / "assistants.md").read_text()
    for field in dataclasses.fields(AssistantConfig):
        assert f"| `{field.name}` |" in text, field.name


def test_every_exported_file_is_documented():
    from qtune.feedback.export import EXPORT_FILES

    text = (REPO / "docs" / "ui.md").read_text()
    for name in EXPORT_FILES:
        assert f"`{name}.jsonl`" in text, name


# ----------------------------------------------------------------------------- figures
FIGURE = re.compile(r"(?<![\w.\-/])(\d{1,3}(?:,\d{3})+|\d+\.\d+|\d+(?:\.\d+)?(?=%|x\b))")
LINK = re.compile(r"\]\((docs/[\w.-]+\.md)(?:#([\w-]+))?\)")


def _section(path: Path, anchor: str | None) -> str:
    """The text under the heading whose GitHub anchor is ``anchor`` (the file without one)."""
    text = path.read_text()
    if not anchor:
        return text
    headings = list(re.finditer(r"^(#+) (.+)$", text, flags=re.MULTILINE))
    for index, heading in enumerate(headings):
        slug = re.sub(r"[^\w\- ]", "", heading.group(2).lower()).replace(" ", "-")
        if slug == anchor:
            depth = len(heading.group(1))
            end = next((h.start() for h in headings[index + 1:] if len(h.group(1)) <= depth),
                       len(text))
            return text[heading.start():end]
    raise AssertionError(f"{path.name} has no section #{anchor}")


def _appears(figure: str, text: str) -> bool:
    """The figure is in the text as written, or as a longer number that rounds to it."""
    if re.search(rf"(?<![\d.]){re.escape(figure)}(?!\d)", text):
        return True
    if "." not in figure or "," in figure:
        return False
    places = len(figure.split(".")[1])
    return any(f"{float(n):.{places}f}" == figure
               for n in re.findall(rf"(?<![\d.]){figure.split('.')[0]}\.\d{{{places + 1},}}", text))


def test_every_figure_in_the_readme_comes_from_the_document_it_links():
    """One home per figure: a README paragraph with numbers links the section that holds
    them, and each number is there (as written or rounded)."""
    readme = re.sub(r"```.*?```", "", (REPO / "README.md").read_text(), flags=re.DOTALL)
    headline = readme.split("\n## ")[0]  # the measured claims, before the Quickstart
    checked = 0
    for paragraph in readme.split("\n\n"):
        figures = FIGURE.findall(re.sub(r"`[^`]*`", "", paragraph))  # not in code
        links = LINK.findall(paragraph)
        if not figures or paragraph.lstrip().startswith(("|", "#")):
            continue
        if not links and paragraph not in headline:
            continue  # set-up facts (versions, sizes) outside the headline
        sources = "\n".join(_section(REPO / path, anchor) for path, anchor in links)
        for figure in figures:
            assert _appears(figure, sources), (
                f"README figure {figure} is not in {[p + '#' + a for p, a in links]}: "
                f"{paragraph[:120]}...")
            checked += 1
    assert checked > 40  # the headline paragraphs were read


def test_one_supported_python_range():
    """pyproject.toml's requires-python is the range; README states it, setup checks it."""
    import tomllib

    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low, high = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", spec).groups()
    versions = [f"3.{minor}" for minor in range(int(low), int(high))]
    readme = (REPO / "README.md").read_text()
    assert f"Python {' or '.join(versions)}" in readme
    assert "requires-python" in (REPO / "scripts" / "setup.sh").read_text()


PRIVATE_WORDS = re.compile(r"issue [0-9]|seed paper|this session|design-time|scratch code|"
                           r"the user asked|the issue's", re.IGNORECASE)


def test_the_product_speaks_only_of_itself():
    """No tracker numbers or development history in code, configs or docs."""
    paths = [*REPO.glob("*.md"), *REPO.glob("docs/*.md"), *REPO.glob("*.toml"),
             *REPO.glob("*/*.toml"), REPO / "Makefile", REPO / "Dockerfile",
             *(p for p in REPO.glob("**/*.py") if ".venv" not in p.parts and "tests" not in p.parts)]
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in paths if p.is_file()
             for m in PRIVATE_WORDS.finditer(p.read_text(errors="replace"))]
    assert found == []


def test_shipped_files_carry_no_machine_paths():
    """Adapters, configs and docs travel to other machines: no home or checkout paths."""
    paths = [p for folder in ("adapters", "configs", "docs", "studies") for p in
             (REPO / folder).rglob("*") if p.suffix in (".json", ".md", ".toml", ".csv")]
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in paths
             for m in re.finditer(r"(/root/|/home/\w+|/work/|/Users/)\S*", p.read_text())]
    assert len(paths) > 20 and found == []
