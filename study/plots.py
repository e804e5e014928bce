"""The study's figure per task: held-out loss against trainable parameters (each method
at its best rate, mean and range over seeds) and against the learning rate (the sweep)."""

from __future__ import annotations

from pathlib import Path

from qtune.study.config import StudyConfig
from qtune.study.runner import ResultsFile
from qtune.study.summary import summarize

COLOURS = {"lora": "tab:blue", "lora-r1": "tab:cyan", "qwth": "tab:red",
           "qwth-none": "tab:gray", "qwth-vector": "tab:green", "qwth-frozen": "tab:orange",
           "qwth-expval": "tab:purple", "qwth-layer": "tab:brown", "qwth-nonzero": "tab:pink",
           "qwth-lr-split": "tab:olive", "qtha": "black"}


def plot_task(study: StudyConfig, results: ResultsFile, task: str, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = summarize(results, study, task)
    if not any(s.losses for s in summaries.values()):
        return None
    figure, (size_axis, rate_axis) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for method, summary in summaries.items():
        colour = COLOURS.get(method)
        if summary.losses and summary.trainable:
            values = list(summary.losses.values())
            mean = sum(values) / len(values)
            size_axis.errorbar([summary.trainable], [mean],
                               yerr=[[mean - min(values)], [max(values) - mean]],
                               fmt="o", capsize=4, color=colour,
                               label=f"{method} ({len(values)} seeds)")
        sweep = sorted((r["lr"], r["heldout_loss"]) for (t, m, _, s), r in results.rows.items()
                       if (t, m, s) == (task, method, study.seeds[0]))
        if sweep:
            rate_axis.plot(*zip(*sweep, strict=True), "o-", color=colour, label=method)
    size_axis.set_xscale("log")
    size_axis.set_xlabel("trainable parameters (log)")
    size_axis.set_ylabel("held-out loss at the best rate (mean, range over seeds)")
    rate_axis.set_xscale("log")
    rate_axis.set_xlabel("peak learning rate (log)")
    rate_axis.set_ylabel(f"held-out loss (seed {study.seeds[0]})")
    for axis in (size_axis, rate_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"{study.name}: {task}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
