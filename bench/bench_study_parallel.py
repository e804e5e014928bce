"""Does a study finish sooner as parallel one-thread runs than as one two-thread run at
a time? The same round of study runs (the frontier study's budget, fewer steps), once
with `qtune study`'s default (one run after another, torch taking every core) and once
as Ray tasks on a local Ray (`--ray-address local --ray-cpus-per-run 1`: one run per
core). Run it on a quiet machine (no study sharing the cores):

    .venv/bin/python bench/bench_study_parallel.py --method lora-xs --steps 10

It prints both wall times, their ratio, and each run's held-out loss both ways (threads
change the order of float sums, so the losses may differ in their last digits).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

from qtune.study.config import StudyConfig
from qtune.study.runner import StudyRunner

from qtune.hardware import cpu_class, speed_flags_text

FRONTIER = Path(__file__).resolve().parents[1] / "studies" / "frontier.toml"


def one_round(method: str, steps: int, runs: int, output: Path) -> StudyConfig:
    """``runs`` runs of ``method`` at seed 0, one per rate: a single round of the runner."""
    study = StudyConfig.from_toml(FRONTIER)
    rates = [1e-3 * 3.16 ** i for i in range(runs)]
    return dataclasses.replace(
        study, name=f"bench-{output.name}", methods=[method], learning_rates={method: rates},
        seeds=[0], seeded=[], compare_to=[], max_extensions=0, output=str(output),
        train={**study.train, "steps": steps}).validate()


def timed(study: StudyConfig, runs_root: Path, pool=None) -> tuple[float, list[float]]:
    started = time.perf_counter()
    results = StudyRunner(study, runs_root=runs_root, progress=False, pool=pool).run()
    elapsed = time.perf_counter() - started
    rows = sorted(results.rows.values(), key=lambda r: r["lr"])
    return elapsed, [r["heldout_loss"] for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lora-xs", help="a study method (default: lora-xs)")
    parser.add_argument("--steps", type=int, default=10, help="steps per run (default: 10)")
    parser.add_argument("--runs", type=int, default=2,
                        help="runs in the round (default: 2, one per core here)")
    args = parser.parse_args(argv)
    from qtune.study.ray_pool import RayPool

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sequential = timed(one_round(args.method, args.steps, args.runs, root / "seq"),
                           root / "runs-seq")
        pool = RayPool("local", cpus_per_run=1.0, local_cpus=os.cpu_count())
        try:
            parallel = timed(one_round(args.method, args.steps, args.runs, root / "ray"),
                             root / "runs-ray", pool)
        finally:
            pool.close()
    print(f"{platform.machine()}, {os.cpu_count()} cores ({cpu_class()}); CPU flags: "
          f"{speed_flags_text()}; {time.strftime('%Y-%m-%d')}")
    print(f"{args.runs} runs of {args.method}, {args.steps} steps each (frontier budget otherwise)")
    print(f"one after another (torch threads: all cores): {sequential[0]:.1f} s, held-out "
          f"losses {', '.join(f'{x:.4f}' for x in sequential[1])}")
    print(f"parallel Ray tasks, one core each:            {parallel[0]:.1f} s, held-out "
          f"losses {', '.join(f'{x:.4f}' for x in parallel[1])}")
    print(f"parallel / sequential wall time: {parallel[0] / sequential[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
