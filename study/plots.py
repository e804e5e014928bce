"""The study's figure per task: held-out loss against trainable parameters (each method
at its best rate, mean and range over seeds) and against the learning rate (the sweep).
A preference study shows its held-out preference accuracy before and after instead of
the size panel."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from qtune.study.config import StudyConfig, adapter_family
from qtune.study.results import ResultsFile
from qtune.study.summary import pareto_frontier, summarize, task_methods

COLOURS = {"lora": "tab:blue", "lora-r1": "tab:cyan", "qwth": "tab:red",
           "qwth-none": "tab:gray", "qwth-vector": "tab:green", "qwth-frozen": "tab:orange",
           "qwth-expval": "tab:purple", "qwth-layer": "tab:brown", "qwth-nonzero": "tab:pink",
           "qwth-lr-split": "tab:olive", "qwth-cores": "teal", "qtha": "black",
           "lora-r2": "steelblue", "lora-r4": "navy", "vera": "goldenrod",
           "lora-xs": "darkgreen", "lora-xs-r8": "yellowgreen",
           "lora-xs-r16": "olivedrab", "qwth-tt2": "salmon",
           "qwth-tt8": "darkred"}
#: One marker per adapter family (the registered method a study method runs), so that
#: sizes of one family read as one kind of point beside the colours.
MARKERS = {"lora": "o", "qwth": "s", "vera": "v", "lora-xs": "D", "qtha": "P"}
#: A swept loss this many times the task's best (a rate past the method's range, or a run
#: that diverged) is drawn at the top edge (a triangle) so that it does not squash every
#: other curve into one line.
OFF_SCALE = 1.25


def marker(method: str) -> str:
    """The marker of a study method's adapter family."""
    return MARKERS.get(adapter_family(method), "o")


def plot_task(study: StudyConfig, results: ResultsFile, task: str, path: Path) -> Path | None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = summarize(results, study, task)
    if not any(s.losses for s in summaries.values()):
        return None
    if study.select_by == "preference_loss":
        figure, axes = plt.subplots(1, 3, figsize=(17, 4.5), dpi=100)
        plot_preference_change(axes[0], study, results, summaries, task)
        plot_sft_cost(axes[2], study, results, task)
        return _finish(figure, axes, study, results, task, path)
    figure, (size_axis, rate_axis) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for method, summary in summaries.items():
        colour = COLOURS.get(method)
        if summary.losses and summary.trainable:
            values = list(summary.losses.values())
            mean = sum(values) / len(values)
            size_axis.errorbar([summary.trainable], [mean],
                               yerr=[[mean - min(values)], [max(values) - mean]],
                               fmt=marker(method), capsize=4, color=colour,
                               label=f"{method} ({len(values)} seed{'s' * (len(values) > 1)})")
    draw_frontier(size_axis, pareto_frontier(summaries))
    size_axis.set_xscale("log")
    size_axis.margins(x=0.1, y=0.1)  # room for the frontier's labels
    size_axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(thousands))
    size_axis.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(thousands))
    size_axis.set_xlabel("trainable parameters (log)")
    size_axis.set_ylabel(f"{study.select_by.replace('_', ' ')} at the best rate (mean, range "
                         "over seeds)")
    return _finish(figure, (size_axis, rate_axis), study, results, task, path)


def _finish(figure: Any, axes: tuple, study: StudyConfig, results: ResultsFile, task: str,
            path: Path) -> Path:
    """The sweep on the right, legends, title, and the file."""
    import matplotlib.pyplot as plt

    plot_sweeps(axes[1], study, results, task)
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"{study.name}: {task}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_preference_change(axis: Any, study: StudyConfig, results: ResultsFile,
                           summaries: dict, task: str) -> None:
    """Held-out preference accuracy before and after tuning, each method at its best rate
    (after: the share of its seeds right, per example), with 95% bootstrap intervals over
    the held-out examples."""
    from qtune.study.pair_scores import accuracy_interval, kept_scores, right_before_after

    for offset, (method, runs) in enumerate(kept_scores(study, results, summaries, task).items()):
        if not runs:
            continue
        points = [accuracy_interval(share) for share in right_before_after(runs)]
        xs = [0 + 0.06 * offset, 1 + 0.06 * offset]
        means = [100 * mean for mean, _, _ in points]
        axis.errorbar(xs, means, yerr=[[100 * (m - lo) for m, lo, _ in points],
                                       [100 * (hi - m) for m, _, hi in points]],
                      fmt=f"{marker(method)}-", capsize=4, color=COLOURS.get(method),
                      label=f"{method} ({len(runs)} seed{'s' * (len(runs) > 1)})")
    axis.axhline(50, color="black", alpha=0.3, linestyle=":", label="chance")
    axis.set_xticks([0, 1], ["before (start adapter)", "after"])
    axis.set_xlim(-0.4, 1.6)
    axis.set_ylabel("held-out preference accuracy, % (95% bootstrap interval)")


def draw_frontier(axis: Any, frontier: list[tuple[str, int, float]]) -> None:
    """The Pareto frontier as a step line (the lowest loss reached with so few parameters),
    each point on it labelled with its method."""
    if len(frontier) < 2:
        return
    sizes = [size for _, size, _ in frontier]
    losses = [loss for _, _, loss in frontier]
    axis.step(sizes, losses, where="post", color="black", alpha=0.35, linestyle="--",
              label="Pareto frontier (means)")
    last_labelled = 0.0
    for method, size, loss in frontier:
        if size < 1.1 * last_labelled:
            continue  # variants of one size: the legend tells them apart, labels would overlap
        axis.annotate(method, (size, loss), textcoords="offset points", xytext=(6, 5),
                      fontsize=8, color=COLOURS.get(method, "black"))
        last_labelled = size


def one_two_five(value: float) -> bool:
    """Whether a log axis labels this tick: 1, 2 and 5 of each decade only, so that the
    minor ticks' labels never overlap."""
    if value <= 0:
        return False
    lead = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return any(math.isclose(lead, d) for d in (1, 2, 5))


def thousands(value: float, _position: int) -> str:
    """20k, 50k, 100k."""
    return f"{value / 1000:g}k" if one_two_five(value) else ""


def plain(value: float, _position: int) -> str:
    """0.02, 0.05, 0.1, 2, 5: plain numbers, not powers of ten."""
    return f"{value:g}" if one_two_five(value) else ""


def plot_sweeps(axis: Any, study: StudyConfig, results: ResultsFile, task: str) -> None:
    """The study's loss against the rate at the sweep's seed (held-out loss: runs far above
    the best at the top edge; preference loss: a log axis)."""
    seed = study.seeds[0]
    sweeps = {method: sorted((r["lr"], r[study.select_by])
                             for r in results.at_seed(task, method, seed))
              for method in task_methods(results, study, task)}
    losses = [loss for sweep in sweeps.values() for _, loss in sweep]
    if not losses:
        return
    # A preference loss spans decades between rates (DPO's falls towards 0 on easy pairs):
    # a log axis shows every run; a held-out loss moves by a few percent, and a diverged
    # run would flatten the rest, so runs far above the best sit at the top edge.
    spans_decades = study.select_by == "preference_loss"
    top = float("inf") if spans_decades else min(losses) * OFF_SCALE
    for method, sweep in sweeps.items():
        if not sweep:
            continue
        rates = [lr for lr, _ in sweep]
        shown = [min(loss, top) for _, loss in sweep]
        axis.plot(rates, shown, f"{marker(method)}-", color=COLOURS.get(method), label=method)
        for lr, loss in sweep:
            if loss > top:
                axis.plot([lr], [top], "^", markersize=10, color=COLOURS.get(method))
                axis.annotate(f"{loss:.2f} (off scale)", (lr, top), textcoords="offset points",
                              xytext=(-8, -14), ha="right", fontsize=7)
    axis.set_xscale("log")
    axis.set_xlabel("peak learning rate (log)")
    if spans_decades:
        _log_y(axis)
        axis.set_ylabel(f"{study.select_by.replace('_', ' ')} (seed {seed}, log)")
    else:
        axis.set_ylabel(f"{study.select_by.replace('_', ' ')} (seed {seed}); off-scale runs "
                        "at the top edge")


def plot_sft_cost(axis: Any, study: StudyConfig, results: ResultsFile, task: str) -> None:
    """What a preference study's rates cost: the held-out loss of the SFT answers after
    tuning at each rate (sweep seed), against where each method started."""
    seed = study.seeds[0]
    for method in task_methods(results, study, task):
        sweep = sorted((r["lr"], r["heldout_loss"], r.get("heldout_loss_before"))
                       for r in results.at_seed(task, method, seed))
        if not sweep:
            continue
        colour = COLOURS.get(method)
        axis.plot([lr for lr, _, _ in sweep], [loss for _, loss, _ in sweep], f"{marker(method)}-",
                  color=colour, label=f"{method}, after")
        if sweep[0][2] is not None:
            axis.axhline(sweep[0][2], color=colour, linestyle=":", label=f"{method}, before")
    axis.set_xscale("log")
    _log_y(axis)
    axis.set_xlabel("peak learning rate (log)")
    axis.set_ylabel(f"held-out loss of the SFT answers (seed {seed}, log)")


def _log_y(axis: Any) -> None:
    """A log y axis whose ticks read as plain numbers (0.05, 2), not powers of ten."""
    import matplotlib.ticker

    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(plain))
    axis.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(plain))
