"""Run a study's grid, resumably: every finished run is appended to runs.csv at once, and
a rerun skips what is there (an interrupted run resumes from its own checkpoint).

Order, task by task: every method's learning-rate sweep at the first seed, extended by one
rate while the best sits at an edge; then the other seeds at each method's best rate (so
one task's answer is complete before the next task starts).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtune.study.config import StudyConfig, extend_sweep, grid_point, rate_label

from qtune.config import settings
from qtune.errors import QtuneError

log = logging.getLogger(__name__)

COLUMNS = ("study", "fingerprint", "task", "method", "trainable_params", "lr", "seed", "steps",
           "train_loss", "heldout_loss", "seconds", "phase", "heldout_loss_before",
           "preference_accuracy_before", "preference_accuracy", "preference_loss")
#: Columns only some studies fill (preference tuning); empty elsewhere.
OPTIONAL_FLOATS = ("heldout_loss_before", "preference_accuracy_before", "preference_accuracy",
                   "preference_loss")
RUNS_FILE = "runs.csv"

Key = tuple[str, str, str, int]


def key_of(task: str, method: str, lr: float, seed: int) -> Key:
    return task, method, rate_label(grid_point(lr)), int(seed)


class ResultsFile:
    """runs.csv: one row per finished run, appended and flushed to disk as it finishes."""

    def __init__(self, path: Path, study: StudyConfig) -> None:
        self.path, self.study = path, study
        #: This study's rows; other studies' rows in the same file are counted, not read.
        self.rows: dict[Key, dict[str, Any]] = {}
        self.other_rows = 0
        if path.is_file():
            self._read()

    def fingerprint(self, method: str) -> str:
        return self.study.fingerprint(method)

    def _read(self) -> None:
        with self.path.open(newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                if row.get("method") not in self.study.methods:
                    self.other_rows += 1
                    continue
                expected = self.fingerprint(row["method"])
                if row.get("fingerprint") != expected:
                    raise QtuneError(
                        f"{self.path} line {number} was written by a different study config "
                        f"(fingerprint {row.get('fingerprint')!r}; {row['method']} in this "
                        f"config has {expected!r}: another training budget or method "
                        "setting). Give this study another `output`, or move the old file away."
                    )
                try:
                    parsed = {**row, "lr": float(row["lr"]), "seed": int(row["seed"]),
                              "heldout_loss": float(row["heldout_loss"]),
                              "train_loss": float(row["train_loss"]),
                              "trainable_params": int(row["trainable_params"])}
                    parsed.update({name: float(row[name]) if row.get(name) else None
                                   for name in OPTIONAL_FLOATS})
                except (KeyError, TypeError, ValueError) as error:
                    raise QtuneError(f"{self.path} line {number} is not a complete run row "
                                     f"({error}); fix or delete that line") from error
                self.rows[key_of(row["task"], row["method"], parsed["lr"], parsed["seed"])] = parsed

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        # An older file keeps its own columns (a study that fills none of the new ones).
        columns = COLUMNS if new else self.path.open().readline().strip().split(",")
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({name: "" if row.get(name) is None else row[name]
                             for name in columns})
            handle.flush()
            os.fsync(handle.fileno())
        self.rows[key_of(row["task"], row["method"], row["lr"], row["seed"])] = row

    def best_rate(self, task: str, method: str, seed: int) -> float:
        """The swept rate with the lowest held-out loss (or the study's select_by) at
        ``seed``."""
        swept = [r for (t, m, _, s), r in self.rows.items()
                 if (t, m, s) == (task, method, seed)]
        return min(swept, key=lambda r: r[self.study.select_by])["lr"]


TrainFn = Callable[..., dict[str, Any]]


class StudyRunner:
    """Walks the grid; ``train`` is qtune's training loop (a test may pass a wrapper)."""

    def __init__(self, study: StudyConfig, train: TrainFn | None = None,
                 runs_root: Path | None = None, progress: bool = True) -> None:
        from qtune.finetune.train import train as train_loop

        self.study = study
        self.train = train or train_loop
        self.results = ResultsFile(study.output_dir / RUNS_FILE, study)
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
                best = {method: self._sweep(task, method) for method in self.study.methods}
                for method, lr in best.items():
                    for seed in self.study.seeds_of(method)[1:]:
                        self._ensure(task, method, lr, seed, "seeds")
        finally:
            self.bar.close()
        return self.results

    def _sweep(self, task: str, method: str) -> float:
        rates = list(self.study.learning_rates[method])
        seed = self.study.seeds[0]
        for extension in range(self.study.max_extensions + 1):
            for lr in rates:
                self._ensure(task, method, lr, seed, "sweep")
            best = self.results.best_rate(task, method, seed)
            extra = extend_sweep(rates, best)
            if extra is None:
                return best
            if extension == self.study.max_extensions:
                log.warning("%s %s: the best rate %g is still at an edge of %s after %d "
                            "extensions", task, method, best, rates, extension)
                return best
            log.info("%s %s: best rate %g at an edge: adding %g", task, method, best, extra)
            rates.append(extra)
            self.bar.total += 1
            self.bar.refresh()
        return self.results.best_rate(task, method, seed)

    def _ensure(self, task: str, method: str, lr: float, seed: int, phase: str) -> None:
        if key_of(task, method, lr, seed) in self.results.rows:
            return
        folder = self.runs_root / f"{task}-{method}-lr{rate_label(lr)}-s{seed}"
        config = self.study.run_config(task, method, lr, seed, folder)
        from qtune.finetune.run_folder import checkpoint_file

        if checkpoint_file(folder).is_file():
            config.resume = True  # an interrupted run continues where it stopped
        elif folder.exists():
            config.overwrite = True  # a run that never checkpointed starts afresh
        self.bar.set_postfix_str(f"{task} {method} lr {lr:g} seed {seed}")
        metrics = self.train(config)
        self.results.append({
            "study": self.study.name, "fingerprint": self.results.fingerprint(method),
            "task": task,
            "method": method, "trainable_params": metrics["trainable_parameters"], "lr": lr,
            "seed": seed, "steps": metrics["steps"],
            "train_loss": metrics["final_train_loss_mean10"],
            "heldout_loss": metrics["final_eval_loss"], "seconds": metrics["wall_seconds"],
            "phase": phase, **{name: metrics.get(name) for name in (
                "preference_accuracy_before", "preference_accuracy", "preference_loss")},
            "heldout_loss_before": metrics.get("initial_eval_loss")
            if self.study.select_by == "preference_loss" else None,
        })
        self.bar.update(1)
