"""docs/cli.md, written from the argument definitions themselves (as vLLM writes its CLI
reference): every command, every option and its help text (which gives the default), and
the settings tables of docs/configuration.md (training runs, assistant files), written from the dataclasses.
Neither can fall behind the code: ``tests/test_docs.py`` fails when one is stale.

    python -m qtune.cli_reference --update      # rewrites both (`make docs`)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

from qtune.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
HEADER = """# Command-line reference

Every `qtune` command and option, written from the argument definitions by
`make docs` (`tests/test_docs.py` fails when this file
and the code disagree); `--help` after any command shows the same. Defaults read from `QTUNE_*`
variables are listed in [configuration.md](configuration.md).
"""


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("qtune",)
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Every parser under ``parser``, depth first, with the help its parent gives it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + (name,), sub, helps.get(name, "")
                yield from _commands(sub, path + (name,))


def _shown(value: object) -> str:
    """A default as a reader's machine would have it: no checkout or home path."""
    if value is None or value is False or value == [] or value == argparse.SUPPRESS:
        return "none"
    text = str(value)
    text = text.replace(str(REPO) + os.sep, "").replace(str(REPO), ".")
    return text.replace(str(Path.home()), "~")


def _option_name(action: argparse.Action) -> str:
    names = ", ".join(action.option_strings) or action.metavar or action.dest
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        return f"{names} {{{','.join(map(str, action.choices))}}}"
    if action.nargs != 0 and action.option_strings:
        metavar = action.metavar or action.dest.upper()
        return f"{names} {metavar if isinstance(metavar, str) else ' '.join(metavar)}"
    return names


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        help_text = (action.help or "") % {"default": _shown(action.default), "prog": parser.prog}
        rows.append(f"| `{_cell(_option_name(action))}` | {_cell(help_text)} |")
    if not rows:
        return []
    return ["| option | what it does (and its default) |", "|---|---|", *rows, ""]


def render() -> str:
    parser = build_parser()
    lines = [HEADER, "## `qtune`", "", _cell(parser.description or ""), "", *_table(parser)]
    for path, sub, summary in _commands(parser):
        lines += [f"{'#' * min(len(path), 4)} `{' '.join(path)}`", ""]
        text = sub.description or summary
        if text:
            lines += [_cell(text), ""]
        lines += _table(sub)
    return "\n".join(lines).rstrip() + "\n"


CONFIGURATION = REPO / "docs" / "configuration.md"


def _marks(name: str) -> tuple[str, str]:
    return (f"<!-- {name}: written by `python -m qtune.cli_reference --update` -->",
            f"<!-- end of {name} -->")


def training_settings_table() -> str:
    """Every TOML key of a run: the run's, those every method shares, then each method's."""
    from qtune.finetune.flags import flag_name, setting_sections, shown

    lines = ["| key | default | flag | what it sets |", "|---|---|---|---|"]
    for title, config_class, names, defaults, docs in setting_sections():
        lines.append(f"| **{title}** | | | |")
        for name in names:
            lines.append(f"| `{name}` | `{_cell(shown(defaults.get(name)))}` | "
                         f"`{flag_name(config_class, name)}` | {_cell(docs[name])} |")
    return "\n".join(lines)


def assistant_settings_table() -> str:
    """Every key of an assistant file, from AssistantConfig's field docstrings."""
    import dataclasses

    from qtune.assistants import AssistantConfig
    from qtune.dataclass_docs import field_docs
    from qtune.finetune.flags import shown

    docs = field_docs(AssistantConfig)
    lines = ["| key | default | what it sets |", "|---|---|---|"]
    for field in dataclasses.fields(AssistantConfig):
        if field.default is not dataclasses.MISSING:
            default = f"`{_cell(shown(field.default))}`"
        elif field.default_factory is not dataclasses.MISSING:
            default = f"`{_cell(shown(field.default_factory()))}`"
        else:
            default = "required"
        lines.append(f"| `{field.name}` | {default} | {_cell(docs[field.name])} |")
    return "\n".join(lines)


ASSISTANTS_DOC = REPO / "docs" / "assistants.md"
#: The tables written here: the file each lives in, by its markers' names.
TABLES = {"training-settings": (CONFIGURATION, training_settings_table),
          "assistant-settings": (ASSISTANTS_DOC, assistant_settings_table)}
#: The files holding generated tables (each is checked for staleness by the tests).
TABLE_DOCS = (CONFIGURATION, ASSISTANTS_DOC)


def with_tables(text: str, doc: Path = CONFIGURATION) -> str:
    """``text`` of ``doc`` with its generated tables written afresh."""
    for name, (home, table) in TABLES.items():
        if home != doc:
            continue
        start, end = _marks(name)
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = f"{head}{start}\n{table()}\n{end}{tail}"
    return text


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--update"]:
        (REPO / "docs" / "cli.md").write_text(render())
        for doc in TABLE_DOCS:
            doc.write_text(with_tables(doc.read_text(), doc))
    else:
        print(render(), end="")
