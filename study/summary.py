"""A study's numbers per task: each method at its best rate, intervals over seeds, and
paired differences (paired by seed: the seed fixes the data order and the initial
weights' random stream, so two methods with the same seed see the same batches)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from qtune.study.config import FRONTIER, StudyConfig, extend_sweep, grid_point
from qtune.study.results import ResultsFile, key_of


@dataclass
class MethodSummary:
    method: str
    best_lr: float | None
    trainable: int | None
    losses: dict[int, float]  # seed -> held-out loss (or the study's select_by) at the best rate
    train_losses: dict[int, float]
    rows: dict[int, dict]  # seed -> the whole runs.csv row at the best rate

    def interval(self) -> tuple[float, float, float] | None:
        return mean_interval(list(self.losses.values()))


def mean_interval(values: list[float]) -> tuple[float, float, float] | None:
    """(mean, low, high): a 95% Student-t interval; (mean, mean, mean) for one value."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def task_methods(results: ResultsFile, study: StudyConfig, task: str) -> list[str]:
    """The methods ``task`` runs: all of them for the first task (or ``follow_up = "all"``);
    for a later task of a ``follow_up = "frontier"`` study, the named ones and those on the
    first task's frontier."""
    first = study.tasks[0]
    if task == first or study.follow_up == "all":
        return list(study.methods)
    chosen = set(study.named_methods()) | sweep_frontier(results, study, first)
    return [m for m in study.methods if m in chosen]


def summarize(results: ResultsFile, study: StudyConfig, task: str) -> dict[str, MethodSummary]:
    """Each method ``task`` runs at its best rate (the rate chosen at the sweep's seed)."""
    summaries = {}
    sweep_seed = study.seeds[0]
    for method in task_methods(results, study, task):
        rows = [r for (t, m, _, _), r in results.rows.items() if (t, m) == (task, method)]
        swept = [r for r in rows if r["seed"] == sweep_seed]
        key = study.select_by
        best = min(swept, key=lambda r: r[key])["lr"] if swept else None
        at_best = [r for r in rows if best is not None and f"{r['lr']:.6g}" == f"{best:.6g}"]
        summaries[method] = MethodSummary(
            method, best, rows[0]["trainable_params"] if rows else None,
            {r["seed"]: r[key] for r in at_best},
            {r["seed"]: r["train_loss"] for r in at_best},
            {r["seed"]: r for r in at_best})
    return summaries


def paired(a: MethodSummary, b: MethodSummary) -> tuple[float, float, float, float | None, int]:
    """(mean a-b, CI low, CI high, p of the paired t-test or None, seeds paired)."""
    seeds = sorted(set(a.losses) & set(b.losses))
    diffs = [a.losses[s] - b.losses[s] for s in seeds]
    mean, low, high = mean_interval(diffs) or (float("nan"),) * 3
    p = None
    if len(seeds) >= 2 and statistics.stdev(diffs) > 0:
        from scipy import stats

        p = float(stats.ttest_rel([a.losses[s] for s in seeds],
                                  [b.losses[s] for s in seeds]).pvalue)
    return mean, low, high, p, len(seeds)


def pareto_frontier(summaries: dict[str, MethodSummary]) -> list[tuple[str, int, float]]:
    """(method, trainable parameters, mean held-out loss) of the methods no other beats
    with as many parameters or fewer, smallest first."""
    points = sorted((s.trainable, s.interval()[0], method) for method, s in summaries.items()
                    if s.losses and s.trainable)
    frontier, best = [], float("inf")
    for size, loss, method in points:
        if loss < best:
            frontier.append((method, size, loss))
            best = loss
    return frontier


def sweep_frontier(results: ResultsFile, study: StudyConfig, task: str) -> set[str]:
    """The methods whose best result of the first seed's sweep lies on the Pareto frontier:
    decided from that seed alone, so the later seeds cannot move it."""
    sweep_seed = study.seeds[0]
    at_sweep = {}
    for method, s in summarize(results, study, task).items():
        if sweep_seed in s.losses:
            at_sweep[method] = MethodSummary(method, s.best_lr, s.trainable,
                                             {sweep_seed: s.losses[sweep_seed]}, {}, {})
    return {method for method, _, _ in pareto_frontier(at_sweep)}


def is_complete(results: ResultsFile, study: StudyConfig) -> bool:
    """Every run the protocol asks for is in runs.csv."""
    return all(task_complete(results, study, task) for task in study.tasks)


def task_complete(results: ResultsFile, study: StudyConfig, task: str) -> bool:
    """Every run of ``task`` is in runs.csv: its sweeps with their best rate inside (or
    extended ``max_extensions`` times), and every seed at each best rate."""
    first_seed = study.seeds[0]
    if task != study.tasks[0] and not task_complete(results, study, study.tasks[0]):
        return False  # its methods are not decided yet
    frontier = sweep_frontier(results, study, task) if FRONTIER in study.seeded else set()
    for method in task_methods(results, study, task):
        swept = {grid_point(r["lr"]) for r in results.at_seed(task, method, first_seed)}
        planned = {grid_point(lr) for lr in study.learning_rates[method]}
        if not planned <= swept:
            return False
        best = results.best_rate(task, method, first_seed)
        extensions = len(swept - planned)
        if (extend_sweep(sorted(swept), best) is not None
                and extensions < study.max_extensions):
            return False
        if any(key_of(task, method, best, seed) not in results.rows
               for seed in study.seeds_of(method, method in frontier)):
            return False
    return True
