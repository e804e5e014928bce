"""runs.csv, a study's results: one row per finished run, appended and flushed to disk as
it finishes, read back (checked against the study's fingerprints) when a study resumes."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from qtune.study.config import StudyConfig, grid_point, rate_label

from qtune.errors import QtuneError

COLUMNS = ("study", "fingerprint", "task", "method", "trainable_params", "lr", "seed", "steps",
           "train_loss", "heldout_loss", "seconds", "phase", "heldout_loss_before",
           "preference_accuracy_before", "preference_accuracy", "preference_loss", "machine")
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
        columns = COLUMNS if new else self._columns()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({name: "" if row.get(name) is None else row[name]
                             for name in columns})
            handle.flush()
            os.fsync(handle.fileno())
        self.rows[key_of(row["task"], row["method"], row["lr"], row["seed"])] = row

    def _columns(self) -> list[str]:
        """The file's columns, widened first if it was written before some of today's
        (its rows keep their values; the new columns are empty in them)."""
        with self.path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
        missing = [name for name in COLUMNS if name not in columns]
        if missing:
            columns += missing
            widened = self.path.with_suffix(".csv.tmp")
            with widened.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, restval="",
                                        extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
                handle.flush()
                os.fsync(handle.fileno())
            widened.replace(self.path)  # whole or not at all, even on a crash
        return columns

    def at_seed(self, task: str, method: str, seed: int) -> list[dict[str, Any]]:
        """The rows of one method and task at one seed (at the sweep's seed: its sweep)."""
        return [r for (t, m, _, s), r in self.rows.items() if (t, m, s) == (task, method, seed)]

    def best_rate(self, task: str, method: str, seed: int) -> float:
        """The swept rate with the lowest held-out loss (or the study's select_by) at
        ``seed``."""
        return min(self.at_seed(task, method, seed), key=lambda r: r[self.study.select_by])["lr"]
