"""`qtune study`: run a grid of fine-tuning runs from a TOML file and report on it."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="run a fair comparison of methods (tuned learning rates, seeds, controls)",
        description=(
            "Run every fine-tuning run of a study (task x method x learning rate x seed, "
            "see studies/circuit.toml) through the same training loop as `qtune finetune`, "
            "then write its report. Each finished run is appended to <output>/runs.csv at "
            "once; rerunning skips what is there and resumes an interrupted run from its "
            "checkpoint. Task by task: every method's learning-rate sweep (extended while "
            "the best rate is at an edge), then the other seeds at each method's best rate "
            "(for the methods `seeded` names, or all; \"frontier\" there adds those on the "
            "task's Pareto frontier). Every key of a study file: docs/configuration.md."
        ),
    )
    parser.add_argument("--config", type=Path, required=True,
                        help="the study's TOML file, e.g. studies/circuit.toml")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from runs.csv without training anything")
    parser.add_argument("--report", type=Path, default=None,
                        help="Markdown report to write (default: the study's `report`, "
                        "else <output>/../study-<name>.md)")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="run each round's runs as parallel Ray tasks: 'local' (a Ray "
                        "started here for the study), 'auto' (the Ray running here) or "
                        "ray://HOST:PORT (default: one run after another, here)")
    parser.add_argument("--ray-cpus-per-run", type=float, default=1.0,
                        help="CPUs Ray reserves for each run (default: 1)")
    parser.add_argument("--ray-gpus-per-run", type=float, default=0.0,
                        help="GPUs Ray reserves for each run (default: 0)")
    parser.set_defaults(func=_study)


def _study(args: argparse.Namespace) -> int:
    from qtune.study.config import StudyConfig
    from qtune.study.report import write_report
    from qtune.study.results import RUNS_FILE, ResultsFile
    from qtune.study.runner import StudyRunner

    # A report needs the rows, not the data: it can be written where the data is absent.
    study = StudyConfig.from_toml(args.config, read_data=not args.report_only)
    if args.report_only:
        results = ResultsFile(study.output_dir / RUNS_FILE, study)
    elif args.ray_address:
        from qtune.study.ray_pool import RayPool

        pool = RayPool(args.ray_address, args.ray_cpus_per_run, args.ray_gpus_per_run)
        try:
            results = StudyRunner(study, pool=pool).run()
        finally:
            pool.close()
    else:
        results = StudyRunner(study).run()
    command = f"qtune study --config {args.config}"
    report = write_report(study, results, args.report, command)
    print(f"{len(results.rows)} runs in {results.path}; report: {report}")
    return 0
