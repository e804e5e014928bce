"""Retrain the four shipped adapters (adapters/<name>) from configs/<name>.toml.

One after another, in this order: math-qwth, math-lora, counselling-qwth,
counselling-lora. `make finetune-all` runs this script; ``--only`` picks some,
``--steps`` shortens every run for a quick check (into another --output-root).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from qtune.config import PROJECT_ROOT

SHIPPED = ("math-qwth", "math-lora", "counselling-qwth", "counselling-lora")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=SHIPPED, metavar="NAME",
                        help=f"train only this adapter (repeatable); one of {', '.join(SHIPPED)}")
    parser.add_argument("--steps", type=int,
                        help="override the number of steps of every run (quick checks)")
    parser.add_argument("--configs", type=Path, default=PROJECT_ROOT / "configs",
                        help="folder holding <name>.toml (default: the project's configs/)")
    parser.add_argument("--output-root", type=Path,
                        help="write adapters into OUTPUT_ROOT/<name> instead of the config's "
                             "output (a relative output in a config is taken from the project "
                             "root)")
    parser.add_argument("--resume", action="store_true",
                        help="continue each run from its last checkpoint if it has one")
    return parser.parse_args(argv)


def config_for(name: str, args: argparse.Namespace):
    from qtune.finetune.cli import read_toml
    from qtune.finetune.train import TrainConfig

    values = read_toml(args.configs / f"{name}.toml")
    output = Path(values.get("output") or f"adapters/{name}")
    values["output"] = str(args.output_root / name if args.output_root
                           else output if output.is_absolute() else PROJECT_ROOT / output)
    if args.steps:
        values["steps"] = args.steps
    if args.resume:
        values["resume"] = True
    return TrainConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    from qtune.finetune.train import train

    from qtune.errors import QtuneError

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = []
    for name in args.only or SHIPPED:
        started = time.perf_counter()
        try:
            metrics = train(config_for(name, args))
        except QtuneError as error:
            print(f"{name}: error: {error}", file=sys.stderr)
            return 2
        summary.append((name, metrics, time.perf_counter() - started))
    for name, metrics, seconds in summary:
        print(f"{name}: eval loss {metrics['initial_eval_loss']:.4f} -> "
              f"{metrics['final_eval_loss']:.4f}, train loss (last 10) "
              f"{metrics['final_train_loss_mean10']:.4f}, {metrics['trainable_parameters']:,} "
              f"trainable, {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
