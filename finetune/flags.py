"""`qtune finetune`'s setting flags, built from the config dataclasses (as vLLM's
``arg_utils`` builds its flags from its configs): each field is a flag of its type, its
docstring the help, its default shown; the run's fields first, then the settings every
method shares, then each method's own. ``--method NAME --help`` shows that method's only.
Cheap to import: no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

from qtune.finetune.config import TrainConfig, adapter_fields
from qtune.finetune.methods import AdapterConfig, get_method, method_names

from qtune.dataclass_docs import field_docs
from qtune.vocab import TASKS

#: Fields whose help lists the allowed values (validate() checks every field).
CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {"task": lambda: TASKS,
                                                      "method": method_names,
                                                      "lr": lambda: tuple(_default_rates())}


def _default_rates() -> list[str]:
    return [f"{name} {get_method(name).default_lr:g} ({get_method(name).default_lr_source})"
            for name in method_names()]


def flag_name(config_class: type, field_name: str) -> str:
    names = getattr(config_class, "FLAG_NAMES", {})
    return names.get(field_name, "--" + field_name.replace("_", "-"))


def _comma_list(item: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(item(part.strip()) for part in text.split(",") if part.strip())
    parse.__name__ = f"comma-separated {item.__name__}s"
    return parse


def _parser_kwargs(hint: Any) -> dict[str, Any]:
    """argparse keywords for a field's type: bools as --x/--no-x, tuples comma-separated."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0]
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple:
        return {"type": _comma_list(typing.get_args(hint)[0]), "metavar": "A,B"}
    return {"type": hint}


def shown(value: Any) -> str:
    """A default as the help and the docs print it."""
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "unset" if value is None else str(value)


def _defaults(config_class: type) -> dict[str, Any]:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(config_class)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def _method_groups() -> Iterator[tuple[str, list[str], type, list[str]]]:
    """(title, methods, config class, own fields) for each config class after the shared
    base; a config several methods share (QTHA reads QWTH's) appears once."""
    shared = set(adapter_fields(AdapterConfig))
    seen: dict[type, list[str]] = {}
    for name in method_names():
        seen.setdefault(get_method(name).config_class, []).append(name)
    for config_class, methods in seen.items():
        own = [f for f in adapter_fields(config_class) if f not in shared]
        if own:
            labels = ", ".join(f"{get_method(m).label} (--method {m})" for m in methods)
            yield f"settings of {labels}", methods, config_class, own


#: (title, config class, field names, defaults, docstrings)
Section = tuple[str, type, list[str], dict[str, Any], dict[str, str]]


def setting_sections() -> Iterator[Section]:
    """The run's settings, those every method shares, then each method's own."""
    for title, _, config_class, names in [
            ("the run", None, TrainConfig, TrainConfig.run_fields()),
            ("settings of every method", None, AdapterConfig, adapter_fields(AdapterConfig)),
            *_method_groups()]:
        yield title, config_class, names, _defaults(config_class), field_docs(config_class)


def _add_fields(group: argparse._ArgumentGroup, config_class: type, names: list[str],
                defaults: dict[str, Any], docs: dict[str, str]) -> None:
    hints = typing.get_type_hints(config_class)
    for name in names:
        help_text = docs[name].rstrip(".")
        if name in CHOICES:  # listed, not enforced: validate() says what is wrong and why
            help_text += f"; {'defaults' if name == 'lr' else 'one of'}: {', '.join(CHOICES[name]())}"
        if "(unset" not in help_text:  # a docstring that says what unset means says enough
            help_text += f" (default: {shown(defaults.get(name))})"
        group.add_argument(flag_name(config_class, name), dest=name, default=None,
                           help=help_text, **_parser_kwargs(hints[name]))


class MethodHelp(argparse._HelpAction):
    """``-h``: every setting; after ``--method NAME``: the run's, the shared and NAME's."""

    def __call__(self, parser, namespace, values, option_string=None):
        chosen = getattr(namespace, "method", None)
        if chosen:
            for group in parser._action_groups:
                if chosen not in getattr(group, "qtune_methods", [chosen]):
                    group.description = None
                    for action in group._group_actions:
                        action.help = argparse.SUPPRESS
        super().__call__(parser, namespace, values, option_string)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Every TrainConfig field and every registered method's setting as a flag."""
    parser.add_argument("-h", "--help", action=MethodHelp,
                        help="show the options (after --method NAME: that method's settings)")
    method_of_group = {title: methods for title, methods, _, _ in _method_groups()}
    for title, config_class, names, defaults, docs in setting_sections():
        group = parser.add_argument_group(title)
        if title in method_of_group:
            group.qtune_methods = method_of_group[title]
        _add_fields(group, config_class, names, defaults, docs)


def setting_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (unset flags leave the file's or default value)."""
    names = set(TrainConfig.run_fields())
    for name in method_names():
        names |= set(adapter_fields(get_method(name).config_class))
    return {name: getattr(args, name) for name in sorted(names)
            if getattr(args, name, None) is not None}
