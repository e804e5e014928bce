"""Run a study's grid, resumably: every finished run is appended to runs.csv at once, and
a rerun skips what is there (an interrupted run resumes from its own checkpoint).

Order, task by task, in rounds of runs that do not depend on each other: every method's
learning-rate sweep at the first seed; then one more rate for each method whose best sits
at an edge (again, at most ``max_extensions`` times); then the other seeds at each
method's best rate (so one task's answer is complete before the next task starts). A
round runs here one run after another, or as parallel tasks on a Ray cluster
(:mod:`qtune.study.ray_pool`): the rows are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qtune.study.config import FRONTIER, StudyConfig, extend_sweep, rate_label
from qtune.study.pair_scores import SCORES_FILE, ScoresFile
from qtune.study.results import RUNS_FILE, ResultsFile, key_of
from qtune.study.summary import sweep_frontier, task_methods

from qtune.config import settings
from qtune.errors import QtuneError

log = logging.getLogger(__name__)


TrainFn = Callable[..., dict[str, Any]]
#: One run of the grid: (task, study method, rate, seed, phase).
Cell = tuple[str, str, float, int, str]


class LocalPool:
    """Runs cells one after another in this process (the default)."""

    def __init__(self, train: TrainFn) -> None:
        self.train = train

    def run(self, configs: list[tuple[Cell, Any]]) -> Iterator[tuple[Cell, dict[str, Any]]]:
        for cell, config in configs:
            yield cell, self.train(config)


class StudyRunner:
    """Walks the grid in rounds of independent runs; ``train`` is qtune's training loop (a
    test may pass a wrapper), ``pool`` runs a round's cells (here, or on Ray)."""

    def __init__(self, study: StudyConfig, train: TrainFn | None = None,
                 runs_root: Path | None = None, progress: bool = True,
                 pool: Any = None) -> None:
        from qtune.finetune.train import train as train_loop

        self.study = study
        self.pool = pool or LocalPool(train or train_loop)
        self.results = ResultsFile(study.output_dir / RUNS_FILE, study)
        self.scores = ScoresFile(study.output_dir / SCORES_FILE)
        self.runs_root = runs_root or settings().runs_dir / "study" / study.name
        self.progress = progress
        self.bar: Any = None

    def run(self) -> ResultsFile:
        from tqdm.auto import tqdm

        done = sum(1 for key in self.results.rows if key[0] in self.study.tasks)  # own methods
        self.bar = tqdm(total=max(self.study.planned_runs(), done), initial=done, unit="run",
                        desc=f"study {self.study.name}", disable=not self.progress,
                        dynamic_ncols=True, position=1)
        try:
            for task in self.study.tasks:  # one task's answer is complete before the next
                self._check_preference_data(task)
                best = self._sweep_rounds(task)
                frontier = self._frontier(task)
                self._run_round([(task, method, lr, seed, "seeds")
                                 for method, lr in best.items()
                                 for seed in self.study.seeds_of(method, method in frontier)[1:]])
        finally:
            self.bar.close()
        return self.results

    def _frontier(self, task: str) -> set[str]:
        """With ``seeded = [..., "frontier"]``: the methods the sweep put on the task's
        Pareto frontier, which also run at every seed (the progress bar grows by theirs)."""
        if FRONTIER not in self.study.seeded:
            return set()
        frontier = sweep_frontier(self.results, self.study, task)
        added = [m for m in sorted(frontier) if m not in self.study.seeded]
        if added:
            log.info("%s: on the Pareto frontier after the sweep, also seeded: %s", task,
                     ", ".join(added))
            self.bar.total += len(added) * (len(self.study.seeds) - 1)
            self.bar.refresh()
        return frontier

    def _check_preference_data(self, task: str) -> None:
        """A preference study's runs of one task must train and score on the same pairs;
        generated pairs (math) can differ from one machine to the next."""
        recorded = self.scores.data_digests(task)
        if not recorded:
            return
        from qtune.finetune.preference_data import examples_digest, preference_examples

        config = self.study.run_config(task, self.study.methods[0], 1e-3, self.study.seeds[0],
                                       self.runs_root / "data-check")
        here = examples_digest(*preference_examples(config)[:2])
        if recorded != {here}:
            raise QtuneError(
                f"{task}: the preference data here ({config.preferences}, digest {here}) is not "
                f"what this study's finished {task} runs used ({', '.join(sorted(recorded))}; "
                f"{self.scores.path}). Rebuild the data they used (math pairs: `qtune data "
                "pairs math --answers` with the answers they came from, as the study file "
                f"says), or start {task} afresh in another `output`.")

    def _sweep_rounds(self, task: str) -> dict[str, float]:
        """Every method's sweep at the first seed as one round, then one round per
        extension (the methods whose best rate still sits at an edge); the best rates."""
        seed = self.study.seeds[0]
        methods = task_methods(self.results, self.study, task)
        unnamed = [m for m in methods if task != self.study.tasks[0]
                   and self.study.follow_up == FRONTIER and m not in self.study.named_methods()]
        if unnamed:  # on the first task's frontier: not in the planned count
            log.info("%s: also runs %s (on %s's Pareto frontier)", task, ", ".join(unnamed),
                     self.study.tasks[0])
            self.bar.total += sum(len(self.study.learning_rates[m]) + len(self.study.seeds_of(m))
                                  - 1 for m in unnamed)
            self.bar.refresh()
        rates = {method: list(self.study.learning_rates[method]) for method in methods}
        pending = list(methods)
        best: dict[str, float] = {}
        for extension in range(self.study.max_extensions + 1):
            self._run_round([(task, method, lr, seed, "sweep") for method in pending
                             for lr in rates[method]])
            still = []
            for method in pending:
                best[method] = self.results.best_rate(task, method, seed)
                extra = extend_sweep(rates[method], best[method])
                if extra is None:
                    continue
                if extension == self.study.max_extensions:
                    log.warning("%s %s: the best rate %g is still at an edge of %s after %d "
                                "extensions", task, method, best[method], rates[method],
                                extension)
                    continue
                log.info("%s %s: best rate %g at an edge: adding %g", task, method,
                         best[method], extra)
                rates[method].append(extra)
                still.append(method)
                self.bar.total += 1
                self.bar.refresh()
            pending = still
        return best

    def _run_round(self, cells: list[Cell]) -> None:
        """Run the cells not in runs.csv yet; each row is appended as its run finishes."""
        todo = [cell for cell in cells if key_of(*cell[:4]) not in self.results.rows]
        for cell, metrics in self.pool.run([(cell, self._config(*cell[:4])) for cell in todo]):
            self._record(cell, metrics)

    def _config(self, task: str, method: str, lr: float, seed: int):
        from qtune.finetune.run_folder import checkpoint_file

        folder = self.runs_root / f"{task}-{method}-lr{rate_label(lr)}-s{seed}"
        config = self.study.run_config(task, method, lr, seed, folder)
        if checkpoint_file(folder).is_file():
            config.resume = True  # an interrupted run continues where it stopped
        elif folder.exists():
            config.overwrite = True  # a run that never checkpointed starts afresh
        return config

    def _record(self, cell: Cell, metrics: dict[str, Any]) -> None:
        task, method, lr, seed, phase = cell
        self.bar.set_postfix_str(f"{task} {method} lr {lr:g} seed {seed}")
        cell_fields = {"study": self.study.name, "fingerprint": self.results.fingerprint(method),
                       "task": task, "method": method, "lr": lr, "seed": seed}
        self.scores.append(cell_fields, metrics)  # before the row: a rerun rewrites both
        self.results.append({
            **cell_fields, "trainable_params": metrics["trainable_parameters"],
            "steps": metrics["steps"],
            "train_loss": metrics["final_train_loss_mean10"],
            "heldout_loss": metrics["final_eval_loss"], "seconds": metrics["wall_seconds"],
            "phase": phase, **{name: metrics.get(name) for name in (
                "preference_accuracy_before", "preference_accuracy", "preference_loss", "machine")},
            "heldout_loss_before": metrics.get("initial_eval_loss")
            if self.study.select_by == "preference_loss" else None,
            "machine": metrics.get("machine"),  # where it ran (a Ray worker's, too)
        })
        self.bar.update(1)
