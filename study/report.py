"""The study's report: each method at its own best learning rate, intervals over seeds,
paired tests against LoRA and against every control, plots, and a plain verdict.
Intervals are Student-t intervals over seeds; tests are scipy's paired t-test
(``ttest_rel``), paired by seed (see :mod:`qtune.study.summary`)."""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

from qtune.study.config import FRONTIER, METHOD_NOTES, StudyConfig, adapter_family, grid_point
from qtune.study.plots import plot_task
from qtune.study.results import ResultsFile
from qtune.study.summary import (
    MethodSummary,
    is_complete,
    paired,
    pareto_frontier,
    summarize,
    sweep_frontier,
    task_complete,
    task_methods,
)

#: The comparisons the verdict rests on: (a, b, what a win for a would mean).
QUESTIONS = (
    ("qwth", "lora", "Does QWTH beat rank-8 LoRA, each at its own best rate?"),
    ("qwth", "lora-r1", "Does QWTH beat a LoRA of about its size (rank 1)?"),
    ("qwth", "qwth-none", "Does the circuit beat no quantum branch (the plain tensor train)?"),
    ("qwth", "qwth-vector", "Does the circuit beat a trainable classical vector of its size?"),
    ("qwth", "qwth-frozen", "Does training the circuit beat leaving its random angles fixed?"),
)


#: How the report names what a study chooses rates by.
METRIC_LABELS = {"heldout_loss": "held-out loss", "preference_loss": "held-out preference loss"}
#: What a preference study's sweep shows beside its loss: the trade-off of a higher rate.
SWEEP_METRICS = {"preference_accuracy": ("held-out preference accuracy (%)", 100.0),
                 "heldout_loss": ("held-out loss of the SFT answers", 1.0)}


def questions(study: StudyConfig) -> list[tuple[str, str, str]]:
    """The comparisons of this study: the circuit study's, or every method against each
    of ``compare_to``."""
    if not study.compare_to:
        return [q for q in QUESTIONS if q[0] in study.methods and q[1] in study.methods]
    return [(a, b, f"Does {a} beat {b}?") for a in study.methods for b in study.compare_to
            if a != b and a not in study.compare_to[: study.compare_to.index(b)]]


def verdict(diff: tuple[float, float, float, float | None, int], screened: bool = False) -> str:
    mean, _, _, p, n = diff
    if screened and n == 1:
        return f"screened at one seed only (difference {mean:+.4f}; not run at more seeds)"
    if n < 2 or p is None:
        return f"not decided yet ({n} seed{'s' if n != 1 else ''} paired)"
    if p < 0.05:
        return f"**yes** (p = {p:.2g})" if mean < 0 else f"**no**: it is significantly worse (p = {p:.2g})"
    return f"**no**: no significant difference (p = {p:.2g})"


def screened_only(study: StudyConfig, a: str, b: str, frontier: set[str]) -> bool:
    """Whether the question pairs a method the study runs at the sweep's seed only (a
    method on the task's ``frontier`` runs every seed where the study seeds the frontier)."""
    return any(len(study.seeds_of(m, m in frontier)) == 1 for m in (a, b))


def _link(target: Path, report_dir: Path) -> str:
    """A link from the report to a file beside it, or anywhere else (``--report``)."""
    return Path(os.path.relpath(target.resolve(), report_dir)).as_posix()


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def task_section(study: StudyConfig, results: ResultsFile, task: str, figure: Path | None,
                 report_dir: Path) -> list[str]:
    summaries = summarize(results, study, task)
    label = METRIC_LABELS[study.select_by]
    lines = [f"## {task}", ""]
    if figure is not None:
        lines += [f"![{task}: {label}]({_link(figure, report_dir)})", ""]
    lines += ["| method | trainable parameters | best rate (seed "
              f"{study.seeds[0]} sweep) | seeds | {label}, mean [95% CI] | "
              "training loss (last 10 steps) |", "|---|---:|---:|---:|---|---:|"]
    for s in summaries.values():
        interval = s.interval()
        shown = ("n/a" if not interval else f"{interval[0]:.4f} (one seed)"
                 if len(s.losses) == 1 else
                 f"{interval[0]:.4f} [{interval[1]:.4f}, {interval[2]:.4f}]")
        train = statistics.fmean(s.train_losses.values()) if s.train_losses else None
        trainable = f"{s.trainable:,}" if s.trainable else "n/a"
        best = f"{s.best_lr:.3g}" if s.best_lr else "n/a"
        lines.append(f"| {s.method} | {trainable} | {best} | {len(s.losses)} | {shown} | "
                     f"{_fmt(train)} |")
    frontier = pareto_frontier(summaries)
    if len(frontier) > 1:
        lines += ["", f"Pareto frontier (no method reaches a lower mean {label} with as "
                  "many parameters or fewer; one-seed means are provisional): "
                  + ", ".join(f"{m} ({size:,}, {loss:.4f})" for m, size, loss in frontier) + "."]
    if study.select_by == "preference_loss":
        lines += ["", *preference_table(summaries), "", *pair_table(study, results, summaries,
                                                                     task)]
    lines += ["", *sweep_table(study, results, task)]
    if study.select_by == "preference_loss":  # what a higher rate buys and what it costs
        for metric in SWEEP_METRICS:
            lines += ["", *sweep_table(study, results, task, metric)]
    lines += ["", f"| question | A − B {label} [95% CI] | paired t-test p | seeds | "
              "answer |", "|---|---|---:|---:|---|"]
    frontier = sweep_frontier(results, study, task)
    for a, b, question in questions(study):
        if a not in summaries or b not in summaries:
            continue  # a later task that runs only the first task's frontier
        diff = paired(summaries[a], summaries[b])
        p = "n/a" if diff[3] is None else f"{diff[3]:.3g}"
        shown = ("n/a" if not diff[4] else f"{diff[0]:+.4f} (one seed)" if diff[4] == 1 else
                 f"{diff[0]:+.4f} [{diff[1]:+.4f}, {diff[2]:+.4f}]")
        lines.append(f"| {question} ({a} − {b}) | {shown} | {p} | {diff[4]} | "
                     f"{verdict(diff, screened_only(study, a, b, frontier))} |")
    return lines + [""]


def verdict_section(study: StudyConfig, results: ResultsFile) -> list[str]:
    """The plain answers, each question across the tasks (details per task below)."""
    from qtune.study.pair_scores import gain_verdict, kept_scores

    summaries = {task: summarize(results, study, task) for task in study.tasks}
    frontiers = {task: sweep_frontier(results, study, task) for task in study.tasks}
    label = METRIC_LABELS[study.select_by]
    lines = ["## Verdict", "", f"{label.capitalize()}, each method at its own best rate, "
             "paired by seed (a negative difference A − B favours A):", ""]
    for a, b, question in questions(study):
        answers = []
        for task, by_method in summaries.items():
            if a not in by_method or b not in by_method:
                so_far = "" if task_complete(results, study, study.tasks[0]) else " so far"
                answers.append(f"{task}: not run ({a if a not in by_method else b} is off "
                               f"{study.tasks[0]}'s frontier{so_far})")
                continue
            diff = paired(by_method[a], by_method[b])
            shown = f" ({a} − {b} = {diff[0]:+.4f} over {diff[4]} seeds)" if diff[4] >= 2 else ""
            answers.append(f"{task}: {verdict(diff, screened_only(study, a, b, frontiers[task]))}"
                           f"{shown}")
        lines.append(f"- {question} " + "; ".join(answers) + ".")
    sized = {task: size_answer(by_method) for task, by_method in summaries.items()}
    if any(sized.values()):
        lines += ["", "At QWTH's size (the methods within a factor of 2 of its trainable "
                  "parameters), each at its own best rate:", ""]
        lines += [f"- {task}: {answer}" for task, answer in sized.items() if answer]
    if study.select_by == "preference_loss":
        lines += ["", "Held-out preference accuracy, before and after, paired over the "
                  "held-out examples (95% bootstrap interval of the change):", ""]
        kept = {task: kept_scores(study, results, by_method, task)  # one read per task
                for task, by_method in summaries.items()}
        lines += [f"- Did tuning raise {method}'s accuracy? " + "; ".join(
            f"{task}: {gain_verdict(by_method.get(method, []))}" for task, by_method
            in kept.items())
            + "." for method in study.methods]
        lines += ["", "Held-out loss of the SFT answers (preference tuning must not wreck "
                  "it), after minus before, mean over seeds [95% interval]:", ""]
        lines += [f"- Did tuning raise {method}'s held-out SFT loss? " + "; ".join(
            f"{task}: {sft_loss_verdict(by_method.get(method))}" for task, by_method
            in summaries.items()) + "." for method in study.methods]
    return lines + [""]


def sft_loss_verdict(summary: MethodSummary | None) -> str:
    """A plain answer: did preference tuning raise the held-out loss of the SFT answers
    (intervals over seeds), and by how much against where it started?"""
    from qtune.study.summary import mean_interval

    rows = [r for r in (summary.rows.values() if summary else [])
            if r.get("heldout_loss") is not None and r.get("heldout_loss_before") is not None]
    if not rows:
        return "not measured yet"
    change = mean_interval([r["heldout_loss"] - r["heldout_loss_before"] for r in rows])
    start = rows[0]["heldout_loss_before"]
    shown = (f"{start:.4f} → {start + change[0]:.4f}, {change[0]:+.4f}"
             + (f" [{change[1]:+.4f}, {change[2]:+.4f}], {len(rows)} seeds" if len(rows) > 1
                else ", one seed") + f", {100 * change[0] / start:+.1f}%")
    if len(rows) < 2:
        return f"one seed so far ({shown})"
    if change[1] > 0:
        return f"**yes** ({shown})"
    if change[2] < 0:
        return f"**no**, it fell ({shown})"
    return f"**no** clear change ({shown})"


def size_answer(summaries: dict, reference: str = "qwth", factor: float = 2.0) -> str | None:
    """Which adapter is best near QWTH's size, by how much, and which QWTH sizes are on
    the Pareto frontier, against the adapter of another kind nearest their size; None
    where the study has nothing else of QWTH's size."""
    own = summaries.get(reference)
    if own is None or not own.losses or not own.trainable:
        return None
    near = [s for m, s in summaries.items() if s.losses and s.trainable
            and own.trainable / factor <= s.trainable <= own.trainable * factor]
    if not any(not s.method.startswith(reference) for s in near):
        return None
    best = min(near, key=lambda s: s.interval()[0])
    if best.method == reference:
        seeds = len(own.losses)
        lead = (f"{reference} is the best ({own.interval()[0]:.4f}, "
                f"{'one seed: provisional' if seeds < 2 else f'means over {seeds} seeds'})")
    else:
        lead = (f"the best is {best.method} ({best.trainable:,} parameters): "
                f"{best.interval()[0]:.4f} against {reference}'s {own.interval()[0]:.4f}, "
                f"{_difference(best, own)}")
    frontier = [summaries[m] for m, _, _ in pareto_frontier(summaries) if m.startswith(reference)]
    on_frontier = ", ".join(f"{s.method} ({s.trainable:,})" for s in frontier) or "none"
    neighbours = {}  # a QWTH size's place on the frontier, against the nearest other adapter
    others = [s for m, s in summaries.items()
              if adapter_family(m) != adapter_family(reference) and s.losses and s.trainable]
    for variant in frontier if others else []:  # by size: the last per neighbour has the lowest loss
        nearest = min(others, key=lambda s: abs(math.log(s.trainable / variant.trainable)))
        neighbours[nearest.method] = (
            f" {variant.method} against the nearest adapter of another kind, "
            f"{nearest.method} ({nearest.trainable:,}): {variant.interval()[0]:.4f} against "
            f"{nearest.interval()[0]:.4f}, {_difference(variant, nearest)}.")
    return (f"{lead}. QWTH variants on the Pareto frontier: {on_frontier}."
            + "".join(neighbours.values()))


def _difference(a: MethodSummary, b: MethodSummary) -> str:
    """How much lower (or higher) a's mean loss is than b's, with the paired interval and
    t-test where both have two seeds or more."""
    diff = paired(a, b)  # a − b over the paired seeds: negative favours a
    seeds = min(len(a.losses), len(b.losses))
    gap = b.interval()[0] - a.interval()[0]
    low, high = (-diff[2], -diff[1]) if gap >= 0 else (diff[1], diff[2])
    tested = (f" [95% CI {low:.4f}, {high:.4f}], paired t-test p = {diff[3]:.2g}"
              if diff[3] is not None else "")
    seeds_text = " (compared at one seed: provisional)" if seeds < 2 else f" (means over {seeds} seeds)"
    return f"{abs(gap):.4f} {'lower' if gap >= 0 else 'higher'}{tested}{seeds_text}"


def sweep_table(study: StudyConfig, results: ResultsFile, task: str,
                metric: str | None = None) -> list[str]:
    """``metric`` (the study's ``select_by`` unless given) at every swept rate (first seed);
    the rate the study selects in each row in bold."""
    seed, key = study.seeds[0], study.select_by
    metric = metric or key
    swept = {(m, grid_point(r["lr"])): r for (t, m, _, s), r in results.rows.items()
             if t == task and s == seed}
    rates = sorted({lr for _, lr in swept})
    if not rates:
        return ["No run of the learning-rate sweep has finished yet."]
    label, scale = (METRIC_LABELS[key], 1.0) if metric == key else SWEEP_METRICS[metric]
    bold = ("the best of each method" if metric == key
            else f"the rate selected by {METRIC_LABELS[key]}")
    lines = [f"Learning-rate sweep (seed {seed}), {label}; {bold} in bold (a best rate at an "
             "edge of its sweep is extended by one more rate):", "",
             "| method | " + " | ".join(f"{lr:.3g}" for lr in rates) + " |",
             "|---|" + "---:|" * len(rates)]
    digits = 1 if scale != 1.0 else 4
    for method in task_methods(results, study, task):
        row = {lr: r for (m, lr), r in swept.items() if m == method}
        best = min(row, key=lambda lr: row[lr][key]) if row else None
        cells = [("n/a" if lr not in row or row[lr].get(metric) is None else
                  f"**{scale * row[lr][metric]:.{digits}f}**" if lr == best
                  else f"{scale * row[lr][metric]:.{digits}f}") for lr in rates]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _mean_text(values: list[float], digits: int, scale: float = 1.0) -> str:
    from qtune.study.summary import mean_interval

    interval = mean_interval([v * scale for v in values if v is not None])
    if interval is None:
        return "n/a"
    if len(values) == 1:
        return f"{interval[0]:.{digits}f} (one seed)"
    return f"{interval[0]:.{digits}f} [{interval[1]:.{digits}f}, {interval[2]:.{digits}f}]"


def preference_table(summaries: dict) -> list[str]:
    """Before and after preference tuning, each method at its best rate: how often the
    preferred answer is the likelier (per token), and the answers' held-out loss beside it
    (tuning must not wreck it). Means over seeds, 95% Student-t intervals."""
    lines = ["Before → after, at each method's best rate (means over seeds, 95% intervals): "
             "held-out preference accuracy (%), and the held-out loss of the SFT answers:", "",
             "| method | accuracy before | accuracy after | held-out loss before | "
             "held-out loss after |", "|---|---|---|---|---|"]
    for s in summaries.values():
        rows = list(s.rows.values())
        cells = [_mean_text([r.get(k) for r in rows], 1, 100) for k in
                 ("preference_accuracy_before", "preference_accuracy")]
        cells += [_mean_text([r.get(k) for r in rows], 4) for k in
                  ("heldout_loss_before", "heldout_loss")]
        lines.append(f"| {s.method} | " + " | ".join(cells) + " |")
    return lines


def pair_table(study: StudyConfig, results: ResultsFile, summaries: dict,
               task: str) -> list[str]:
    """Did tuning move each method, and QWTH more than LoRA? Paired over the held-out
    examples, which are the smaller sample here (see :mod:`qtune.study.pair_scores`)."""
    from qtune.study.pair_scores import gain_cells, gain_difference, kept_scores

    kept = kept_scores(study, results, summaries, task)
    lines = ["Per held-out example, at each method's best rate: right before (the start "
             "adapter), the share of seeds right after, and the change with its 95% paired "
             "bootstrap interval over the examples (percentage points); and how far the mean score "
             "moved (log-probability per token of the preferred answer minus the other's, "
             "for DPO; positive is toward the preferred):", "",
             "| method | examples | seeds | accuracy before | accuracy after | change [95% CI], "
             "p | score change [95% CI] |", "|---|---:|---:|---:|---:|---|---|"]
    lines += [f"| {method} | " + " | ".join(gain_cells(runs)) + " |"
              for method, runs in kept.items()]
    for a, b, _ in questions(study):
        lines += ["", f"Change of {a} minus change of {b}, paired over the examples: "
                  f"{gain_difference(kept[a], kept[b])}."]
    return lines


def _precision(setting: str) -> str:
    """auto is bf16 on CPUs with native bf16 and fp32 elsewhere: rows from different
    machines then differ in precision, which the report must say."""
    return {"no": "fp32", "bf16": "bf16"}.get(setting, "auto (bf16 where native, else fp32)")


def write_report(study: StudyConfig, results: ResultsFile, path: Path | None,
                 command: str) -> Path:
    path = (path or study.report_path).resolve()  # links below are relative to it
    rows = [r for r in results.rows.values() if r["task"] in study.tasks]
    hours = sum(float(r.get("seconds") or 0) for r in rows) / 3600
    budget = study.run_config(study.tasks[0], study.methods[0], 1e-3, 0, Path("x"),
                              read_data=False)
    planned = study.planned_runs()
    lines = [
        f"# Study `{study.name}`: {study.title}", "",
        # No clock time: a report changes only when its content does.
        f"Written by `{command}` on {cpu_text()}. {machines_text(rows)} "
        f"{len(rows)} runs done ({planned} planned before sweeps whose best rate "
        f"was at an edge were extended{_frontier_runs_text(study)}), {hours:.1f} hours of "
        "training in all" + ("." if is_complete(results, study) else
                             " — **incomplete: the answers below are provisional**."), "",
        f"Every run: {budget.steps} steps x batch {budget.batch_size} x {budget.seq_len} tokens, "
        f"warmup {budget.warmup}, cosine to {budget.min_lr_ratio:g} x the rate, targets "
        f"{', '.join(budget.adapter.target_modules)}, precision {_precision(budget.mixed_precision)}, "
        "the same data order per seed. Held-out "
        f"loss: the mean answer-token cross-entropy on one fixed set of "
        f"{budget.eval_batches * budget.batch_size} examples per task (the same for every "
        f"run). Each method's rate is the best of its sweep at seed {study.seeds[0]}; "
        f"seeds {', '.join(map(str, study.seeds))} at that rate give the intervals "
        "(Student-t, 95%) and the paired tests (paired by seed)" + seeded_text(study), "",
        "Methods: " + "; ".join(f"`{m}`, {METHOD_NOTES[m]}" for m in study.methods) + ".",
        "", *objective_text(budget, study),
    ]
    lines += verdict_section(study, results)
    for task in study.tasks:
        figure = plot_task(study, results, task, study.output_dir / f"{study.name}-{task}.png")
        lines += task_section(study, results, task, figure, path.parent)
    lines += [f"Every run: [{results.path.name}]({_link(results.path, path.parent)}).", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def objective_text(budget, study: StudyConfig) -> list[str]:
    """What a preference study trains on, and from where (empty for fine-tuning)."""
    if budget.objective == "sft":
        return []
    sources = ", ".join(f"`{source}` ({task})" for task, source in study.preferences.items()
                        ) or f"`{budget.preferences}`"
    return [f"Objective: {budget.objective.upper()} (beta {budget.beta:g}) on "
            f"{sources} preferences, each method starting from its own "
            "fine-tuned adapter, which is also its reference model; the held-out preference "
            "accuracy counts the held-out pairs whose preferred answer has the higher "
            "log-probability per token.", ""]


def _frontier_runs_text(study: StudyConfig) -> str:
    """A frontier adds runs (seeds, a later task's methods) that no plan counts beforehand."""
    adds = FRONTIER in study.seeded or (study.follow_up == FRONTIER and len(study.tasks) > 1)
    return " and a frontier added runs" if adds else ""


def seeded_text(study: StudyConfig) -> str:
    if not study.seeded or len(study.seeds) < 2:
        return "."
    named = ", ".join(f"`{m}`" for m in study.seeded if m != FRONTIER)
    if FRONTIER in study.seeded:
        named += (" and " if named else "") + (
            f"every method whose seed-{study.seeds[0]} sweep puts it on the task's Pareto "
            "frontier")
    return f", for {named}; the other methods are screened at seed {study.seeds[0]} only."


def machines_text(rows: list[dict]) -> str:
    """Where the rows were trained (each row records its machine): speed, and precision
    under ``auto``, depend on it."""
    counts: dict[str, int] = {}
    for row in rows:
        where = row.get("machine") or "not recorded"
        counts[where] = counts.get(where, 0) + 1
    if not counts:
        return ""
    return "Runs by machine: " + "; ".join(
        f"{where} ({count} run{'s' if count != 1 else ''})"
        for where, count in sorted(counts.items(), key=lambda item: -item[1])) + "."


def cpu_text() -> str:
    from qtune.hardware import speed_flags_text

    return f"a CPU with flags {speed_flags_text()}"
