"""Every held-out preference example's score, run by run (``scores.jsonl`` beside
runs.csv), and the report's tests over those examples.

A preference study's seeds only vary the training run; its held-out pairs are a sample
too, and a small one (CounselChat's validation questions give 48 pairs). Whether tuning
moved a method, and whether it moved QWTH more than LoRA, is therefore tested paired over
the held-out examples: each example's right/wrong before and after (after: the share of
the method's seeds that get it right), resampled jointly (:func:`qtune.eval.stats.paired_bootstrap`).
A score is the preferred answer's log-probability per token minus the other's (DPO), or
how far a rated answer moved the right way from the reference (KTO); positive is right.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

SCORES_FILE = "scores.jsonl"


class ScoresFile:
    """One JSON line per finished preference run: its cell and its examples' scores."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[tuple, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    run = json.loads(line)
                    self.runs[self._key(run)] = run

    @staticmethod
    def _key(run: dict[str, Any]) -> tuple:
        return run["fingerprint"], run["task"], run["method"], f"{run['lr']:.6g}", run["seed"]

    def append(self, cell: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Keep a run's scores, when its objective gave them (preference tuning)."""
        if "preference_scores" not in metrics:
            return
        run = {**cell, "data": metrics.get("preference_data_digest"),
               "before": metrics["preference_scores_before"],
               "after": metrics["preference_scores"]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(run) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.runs[self._key(run)] = run

    def data_digests(self, task: str) -> set[str]:
        """The digests of the preference data the kept runs of ``task`` trained on."""
        return {run["data"] for run in self.runs.values()
                if run["task"] == task and run.get("data")}

    def of(self, fingerprint: str, task: str, method: str, rows: list[dict]) -> list[dict]:
        """The kept scores of these runs.csv rows (one method, its best rate)."""
        keys = [(fingerprint, task, method, f"{r['lr']:.6g}", r["seed"]) for r in rows]
        return [self.runs[key] for key in keys if key in self.runs]


def right_before_after(runs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per example: right before tuning (0/1), and the share of the runs right after."""
    before = np.asarray(runs[0]["before"]) > 0
    after = np.mean([np.asarray(run["after"]) > 0 for run in runs], axis=0)
    return before.astype(float), after


def accuracy_change(runs: list[dict]):
    """(right before, share right after, their paired bootstrap difference) per example."""
    from qtune.eval.stats import paired_bootstrap

    before, after = right_before_after(runs)
    return before, after, paired_bootstrap(after, before)


def gain_cells(runs: list[dict]) -> list[str]:
    """Table cells for one method: examples, seeds, accuracy before, after, the change
    with its 95% paired bootstrap interval over examples and p, and the mean score's
    change with its interval (how far the answers moved, right or not)."""
    from qtune.eval.stats import paired_bootstrap

    if not runs:
        return ["n/a"] * 6
    before, after, change = accuracy_change(runs)
    scores_after = np.mean([run["after"] for run in runs], axis=0)
    moved = paired_bootstrap(scores_after, np.asarray(runs[0]["before"]))
    return [str(before.size), str(len(runs)), f"{100 * before.mean():.1f}",
            f"{100 * after.mean():.1f}",
            f"{change.difference.format(scale=100, digits=1)}, p {change.p_text()}",
            moved.difference.format(digits=3)]


def gain_difference(a_runs: list[dict], b_runs: list[dict]) -> str:
    """How much more A's tuning raised the accuracy than B's, paired over examples."""
    from qtune.eval.stats import paired_bootstrap

    if not a_runs or not b_runs:
        return "n/a"
    a_before, a_after = right_before_after(a_runs)
    b_before, b_after = right_before_after(b_runs)
    if a_before.size != b_before.size:
        return "n/a (different held-out sets)"
    difference = paired_bootstrap(a_after - a_before, b_after - b_before)
    return f"{difference.difference.format(scale=100, digits=1)}, p {difference.p_text()}"


def gain_verdict(runs: list[dict]) -> str:
    """A plain answer: did tuning change this method's held-out preference accuracy?"""
    if not runs:
        return "not measured yet"
    before, after, change = accuracy_change(runs)
    shown = (f"{100 * before.mean():.1f}% → {100 * after.mean():.1f}%, "
             f"{change.difference.format(scale=100, digits=1)} points over {before.size} "
             f"examples, {len(runs)} seed{'s' if len(runs) != 1 else ''}")
    if change.difference.low > 0:
        return f"**yes**, it rose ({shown})"
    if change.difference.high < 0:
        return f"**no**, it fell ({shown})"
    return f"**no** clear change ({shown})"


def kept_scores(study, results, summaries: dict, task: str) -> dict[str, list[dict]]:
    """Each method's held-out example scores at its best rate (``summaries`` from
    :func:`qtune.study.summary.summarize`), one entry per seed."""
    scores = ScoresFile(study.output_dir / SCORES_FILE)
    return {method: scores.of(results.fingerprint(method), task, method, list(s.rows.values()))
            for method, s in summaries.items()}


def accuracy_interval(right: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high) of a per-example share right: the 95% bootstrap interval."""
    from qtune.eval.stats import bootstrap_mean

    estimate = bootstrap_mean(right)
    return estimate.value, estimate.low, estimate.high
