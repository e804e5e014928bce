"""`qtune assistants`: the assistants as their files define them (qtune/assistants.py)."""

from __future__ import annotations

import argparse
import textwrap


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "assistants",
        help="list the assistants and show one's definition",
        description=("Assistants are data: each is a TOML file (assistants/<name>.toml) with "
                     "its name, title, system prompt, training data sets, evaluation and "
                     "whether the crisis screen applies (docs/configuration.md)."),
    )
    commands = parser.add_subparsers(dest="assistants_command", metavar="ACTION", required=True)
    listing = commands.add_parser("list", help="one line per shipped assistant")
    listing.set_defaults(func=_list)
    show = commands.add_parser("show", help="an assistant's whole definition")
    show.add_argument("assistant", help="a shipped assistant's name, or an assistant's .toml file")
    show.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    from qtune.assistants import shipped_assistants

    for assistant in shipped_assistants().values():
        screen = ", crisis screen" if assistant.crisis_screen else ""
        print(f"{assistant.name:<14} {assistant.title} (trained on "
              f"{', '.join(assistant.tasks) or 'no shipped data'}; evaluated by "
              f"{', '.join(assistant.evaluation)}{screen})")
    return 0


def _show(args: argparse.Namespace) -> int:
    import dataclasses

    from qtune.assistants import get_assistant

    assistant = get_assistant(args.assistant)
    for field in dataclasses.fields(assistant):
        value = getattr(assistant, field.name)
        if isinstance(value, tuple):
            value = ", ".join(value)
        if field.name == "system_prompt":
            value = "\n" + textwrap.indent(textwrap.fill(value, 88), "    ")
        print(f"{field.name}: {value}")
    return 0
