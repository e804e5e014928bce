"""The ``qtune`` command line: one entry point, one subcommand per job.

Each part of qtune registers its own subcommands through a ``register(subparsers)``
function in its ``cli`` module. Registration must stay cheap (no torch, vLLM or Gradio
imports) so that ``qtune --help`` answers instantly; the heavy imports happen inside
the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from qtune import __version__
from qtune.errors import QtuneError

# Order is the order shown by `qtune --help`.
COMMAND_MODULES = (
    "qtune.model_cli",
    "qtune.assistants_cli",
    "qtune.data.cli",
    "qtune.finetune.cli",
    "qtune.eval.cli",
    "qtune.study.cli",
    "qtune.serve.cli",
    "qtune.ui.cli",
    "qtune.feedback.cli",
    "qtune.safety.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qtune",
        description=(
            "Quantum-tuned chat assistants: train QWTH adapters (quantum circuit + tensor "
            "network generated LoRA weights), serve them with vLLM next to a LoRA baseline, "
            "and compare them in a web UI."
        ),
        epilog="Run `qtune COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"qtune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a part that is not installed lists no commands
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except QtuneError as error:
        print(f"qtune {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
