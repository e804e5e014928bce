"""The whole comparison behind docs/results.md: base model vs LoRA vs QWTH, for both
assistants.

From the adapters' own files (``adapters/<name>/metrics.json``, ``log.csv``, the
``qwth/`` compact folder): trainable parameters, adapter size on disk, training loss
at equal steps, held-out loss and training throughput. Through ``qtune eval``'s
functions: GSM8K accuracy (endpoint, greedy) and the counselling next-token error
rate (teacher-forced, in process) plus generated-answer statistics (endpoint), each
with a 95% bootstrap interval and paired tests. Writes a Markdown report and a PNG of
the training-loss curves; per-item results are cached, so a rerun resumes.

Used by `qtune bench`; also runnable as ``python bench/run_comparison.py [--limit N]``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtune.finetune import evaluate, stats
from qtune.finetune.evaluate import Comparison, EvalOptions, ModelResult

from qtune.config import DEFAULT_BASE_MODEL, PROJECT_ROOT, settings

ASSISTANTS = ("math", "counselling")
METHODS = ("lora", "qwth")
METHOD_LABELS = {"lora": "LoRA", "qwth": "QWTH"}
#: How many logged steps the "training loss at equal steps" averages (the log is noisy).
LOSS_WINDOW = 10

#: What the seed description of the project claimed, quoted next to the measurements.
SEED_CLAIMS = {
    "parameters": "76% fewer trainable parameters than LoRA",
    "training": "8.4% better training performance",
    "counselling": "15% fewer errors on mental-health counselling",
    "math": "math accuracy 68% -> 82%",
}
#: The same claims as numbers, so each verdict can say whether the size was reached too.
SEED_GAINS = {"parameters": 0.76, "training": 0.084, "counselling": 0.15}


def _size_words(gains: Sequence[float], claim: str) -> str:
    """'at least the claimed X%' or 'smaller than the claimed X%' for relative gains."""
    claimed = SEED_GAINS[claim]
    if all(g >= claimed for g in gains):
        return f"at least the claimed {100 * claimed:g}%"
    return f"smaller than the claimed {100 * claimed:g}%"


def adapter_name(assistant: str, method: str) -> str:
    return f"{assistant}-{method}"


# --------------------------------------------------------------------------- adapter files


@dataclass
class AdapterFacts:
    """What an adapter folder says about its training."""

    name: str
    folder: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, float | None]] = field(default_factory=list)
    #: Peak learning rate from training_config.json (None when the folder has none).
    learning_rate: float | None = None

    @property
    def trainable(self) -> int | None:
        return self.metrics.get("trainable_parameters")

    @property
    def compact_bytes(self) -> int | None:
        if self.metrics.get("compact_bytes"):
            return int(self.metrics["compact_bytes"])
        compact = self.folder / "qwth"
        if compact.is_dir():
            return sum(p.stat().st_size for p in compact.rglob("*") if p.is_file())
        weights = self.folder / "adapter_model.safetensors"
        return weights.stat().st_size if weights.is_file() else None

    @property
    def peft_bytes(self) -> int | None:
        weights = self.folder / "adapter_model.safetensors"
        return weights.stat().st_size if weights.is_file() else None

    @property
    def tokens_per_second(self) -> float | None:
        tokens, seconds = self.metrics.get("tokens_seen"), self.metrics.get("wall_seconds")
        return tokens / seconds if tokens and seconds else None

    def train_losses(self) -> list[tuple[int, float]]:
        return [
            (int(row["step"]), float(row["train_loss"]))
            for row in self.log
            if row.get("step") is not None and _finite(row.get("train_loss"))
        ]

    def eval_losses(self) -> list[tuple[int, float]]:
        return [
            (int(row["step"]), float(row["eval_loss"]))
            for row in self.log
            if row.get("step") is not None and _finite(row.get("eval_loss"))
        ]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def read_log(path: Path) -> list[dict[str, float | None]]:
    """log.csv rows as numbers (blank cells -> None)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, float | None] = {}
            for key, value in raw.items():
                try:
                    row[key] = float(value) if value not in (None, "") else None
                except ValueError:
                    row[key] = None
            rows.append(row)
    return rows


def read_adapter(folder: Path) -> AdapterFacts | None:
    if not (folder / "adapter_config.json").is_file():
        return None
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    config_path = folder / "training_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return AdapterFacts(
        folder.name, folder, metrics, read_log(folder / "log.csv"), config.get("lr")
    )


def differing_learning_rates(facts: dict[str, AdapterFacts]) -> dict[str, float]:
    """Each adapter's learning rate when they are not all the same, else an empty dict."""
    rates = {name: f.learning_rate for name, f in sorted(facts.items()) if f.learning_rate}
    return rates if len(set(rates.values())) > 1 else {}


def loss_at_equal_steps(
    lora: AdapterFacts, qwth: AdapterFacts, window: int = LOSS_WINDOW
) -> tuple[int, float, float] | None:
    """``(step, LoRA loss, QWTH loss)``: each run's mean training loss over its last
    ``window`` logged steps up to the last step both runs reached."""
    lora_rows, qwth_rows = lora.train_losses(), qwth.train_losses()
    if not lora_rows or not qwth_rows:
        return None
    step = min(lora_rows[-1][0], qwth_rows[-1][0])

    def mean_up_to(rows: list[tuple[int, float]]) -> float:
        kept = [loss for s, loss in rows if s <= step][-window:]
        return sum(kept) / len(kept)

    return step, mean_up_to(lora_rows), mean_up_to(qwth_rows)


# --------------------------------------------------------------------------- plot


def _serving_dtype_words() -> str:
    from qtune.hardware import serving_dtype

    return "float32 (no native bf16 on this CPU)" if serving_dtype() == "float32" else "bf16"


def plot_loss_curves(facts: dict[str, AdapterFacts], path: Path) -> Path | None:
    """LoRA vs QWTH training loss (moving average) and held-out loss, one panel per assistant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [a for a in ASSISTANTS if any(adapter_name(a, m) in facts for m in METHODS)]
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), dpi=100)
    axes = [axes] if len(panels) == 1 else list(axes)
    colours = {"lora": "tab:blue", "qwth": "tab:red"}
    for axis, assistant in zip(axes, panels, strict=True):
        for method in METHODS:
            adapter = facts.get(adapter_name(assistant, method))
            if adapter is None:
                continue
            train = adapter.train_losses()
            if train:
                steps, losses = zip(*train, strict=True)
                axis.plot(steps, losses, color=colours[method], alpha=0.25, linewidth=0.8)
                axis.plot(
                    steps,
                    _moving_average(losses, LOSS_WINDOW),
                    color=colours[method],
                    label=f"{METHOD_LABELS[method]} train (mean of {LOSS_WINDOW})",
                )
            held_out = adapter.eval_losses()
            if held_out:
                axis.plot(
                    *zip(*held_out, strict=True),
                    "o--",
                    color=colours[method],
                    label=f"{METHOD_LABELS[method]} held-out",
                )
        axis.set_title(f"{assistant} assistant")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("cross-entropy on answer tokens")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out = []
    for index in range(len(values)):
        chunk = values[max(0, index - window + 1) : index + 1]
        out.append(sum(chunk) / len(chunk))
    return out


# --------------------------------------------------------------------------- evaluation


def evaluate_all(
    options: EvalOptions, api_base: str | None, api_key: str | None, facts: dict[str, AdapterFacts]
) -> dict[tuple[str, str], ModelResult]:
    """Base + each assistant's adapters on that assistant's task."""
    results: dict[tuple[str, str], ModelResult] = {}
    adapters_dir = options.adapters_dir or settings().adapters_dir
    with evaluate.served_endpoint(api_base, api_key, adapters_dir) as (base_url, key, served):
        client = evaluate.make_client(base_url, key)
        for assistant in ASSISTANTS:
            models = [DEFAULT_BASE_MODEL]
            for method in METHODS:
                name = adapter_name(assistant, method)
                if name in facts and name not in served:
                    print(f"[bench] {name} is not served: left out", file=sys.stderr, flush=True)
                elif name in facts:
                    models.append(name)
            task_options = dataclasses.replace(options, tasks=(assistant,))
            for model in models:
                print(f"[bench] {assistant}: evaluating {model}", file=sys.stderr, flush=True)
                results.update(evaluate.evaluate_models(client, [model], task_options))
    return results


def all_comparisons(results: dict[tuple[str, str], ModelResult]) -> list[Comparison]:
    pairs = []
    for assistant in ASSISTANTS:
        lora, qwth = adapter_name(assistant, "lora"), adapter_name(assistant, "qwth")
        pairs += [(qwth, lora), (qwth, DEFAULT_BASE_MODEL), (lora, DEFAULT_BASE_MODEL)]
    found = evaluate.comparisons(results, pairs)
    # comparisons() pairs models on every task they share; keep each assistant's own.
    return [c for c in found if c.a.startswith(c.task) or c.b.startswith(c.task)]


# --------------------------------------------------------------------------- report


def _int(value: int | None) -> str:
    return f"{value:,}" if value is not None else "n/a"


def _bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1024:.1f} KiB" if value < 2**20 else f"{value / 2**20:.2f} MiB"


def _num(value: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "n/a"


def _pct_change(new: float | None, reference: float | None) -> str:
    if not (_finite(new) and _finite(reference)) or reference == 0:
        return "n/a"
    return f"{100 * stats.relative_change(new, reference):+.1f}%"


def machine_text() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores{memory}, no GPU used"


def adapters_table(facts: dict[str, AdapterFacts]) -> list[str]:
    lines = [
        "| assistant | method | trainable parameters | % of LoRA | compact size on disk | PEFT export | "
        "steps | training tokens/s | held-out loss (start → end) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for assistant in ASSISTANTS:
        lora = facts.get(adapter_name(assistant, "lora"))
        for method in METHODS:
            adapter = facts.get(adapter_name(assistant, method))
            if adapter is None:
                lines.append(f"| {assistant} | {METHOD_LABELS[method]} | not trained | | | | | | |")
                continue
            share = (
                f"{100 * adapter.trainable / lora.trainable:.1f}%"
                if lora and lora.trainable and adapter.trainable
                else "n/a"
            )
            compact_where = "qwth/" if method == "qwth" else "safetensors"
            held_out = (
                f"{_num(adapter.metrics.get('initial_eval_loss'))} → "
                f"{_num(adapter.metrics.get('final_eval_loss'))}"
            )
            lines.append(
                f"| {assistant} | {METHOD_LABELS[method]} | {_int(adapter.trainable)} | {share} "
                f"| {_bytes(adapter.compact_bytes)} ({compact_where}) | {_bytes(adapter.peft_bytes)} "
                f"| {_int(adapter.metrics.get('steps'))} | {_num(adapter.tokens_per_second, 0)} "
                f"| {held_out} |"
            )
    return lines


def training_table(facts: dict[str, AdapterFacts]) -> list[str]:
    lines = [
        f"| assistant | equal step | LoRA train loss (mean of last {LOSS_WINDOW} logged) | "
        "QWTH train loss | QWTH vs LoRA | LoRA held-out (end) | QWTH held-out (end) | QWTH vs LoRA |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for assistant in ASSISTANTS:
        lora = facts.get(adapter_name(assistant, "lora"))
        qwth = facts.get(adapter_name(assistant, "qwth"))
        if lora is None or qwth is None:
            lines.append(f"| {assistant} | both adapters needed | | | | | | |")
            continue
        equal = loss_at_equal_steps(lora, qwth)
        step, lora_loss, qwth_loss = equal if equal else (None, None, None)
        lora_eval = lora.metrics.get("final_eval_loss")
        qwth_eval = qwth.metrics.get("final_eval_loss")
        lines.append(
            f"| {assistant} | {_int(step)} | {_num(lora_loss)} | {_num(qwth_loss)} "
            f"| {_pct_change(qwth_loss, lora_loss)} | {_num(lora_eval)} | {_num(qwth_eval)} "
            f"| {_pct_change(qwth_eval, lora_eval)} |"
        )
    return lines


def _metric(results: dict, assistant: str, model: str, metric: str) -> stats.Estimate | None:
    result = results.get((assistant, model))
    return result.metrics.get(metric) if result else None


def _change(new: stats.Estimate | None, reference: stats.Estimate | None, points: bool) -> str:
    if new is None or reference is None:
        return "n/a"
    delta = new.value - reference.value
    text = f"{100 * delta:+.1f} pts" if points else f"{delta:+.3f}"
    return f"{text} ({_pct_change(new.value, reference.value)})"


def metric_table(
    results: dict, assistant: str, metrics: Sequence[tuple[str, str, bool]]
) -> list[str]:
    """One row per model: each metric with its CI and its change vs LoRA and vs base."""
    header = "| model |"
    rule = "|---|"
    for _, label, _ in metrics:
        header += f" {label} [95% CI] | vs LoRA | vs base |"
        rule += "---:|---:|---:|"
    lines = [header, rule]
    models = [DEFAULT_BASE_MODEL] + [adapter_name(assistant, m) for m in METHODS]
    for model in models:
        if (assistant, model) not in results:
            continue
        row = f"| {model} |"
        for key, _, points in metrics:
            value = _metric(results, assistant, model, key)
            lora = _metric(results, assistant, adapter_name(assistant, "lora"), key)
            base = _metric(results, assistant, DEFAULT_BASE_MODEL, key)
            shown = evaluate.format_metric(key, value) if value else "n/a"
            vs_lora = (
                _change(value, lora, points) if model != adapter_name(assistant, "lora") else "—"
            )
            vs_base = _change(value, base, points) if model != DEFAULT_BASE_MODEL else "—"
            row += f" {shown} | {vs_lora} | {vs_base} |"
        lines.append(row)
    return lines


def comparison_table(found: Sequence[Comparison]) -> list[str]:
    lines = [
        "| task | metric | A − B | difference [95% CI] | test | p |",
        "|---|---|---|---:|---|---:|",
    ]
    for c in found:
        points = c.metric != "loss"
        diff = c.difference.format(
            scale=100 if points else 1, digits=1 if points else 3, suffix=" pts" if points else ""
        )
        test = c.test
        if c.mcnemar is not None:
            test += f" (only A right {c.mcnemar.only_a}, only B right {c.mcnemar.only_b})"
        lines.append(f"| {c.task} | {c.metric} | {c.a} − {c.b} | {diff} | {test} | {_p(c)} |")
    return lines


def _p(comparison: Comparison) -> str:
    """p-value text; a bootstrap p of 0 only means "below the resampling resolution"."""
    if comparison.p_value == 0 and comparison.mcnemar is None:
        return f"< {1 / stats.DEFAULT_RESAMPLES:g}"
    return f"{comparison.p_value:.3g}"


def _find(found: Sequence[Comparison], task: str, metric: str, a: str, b: str) -> Comparison | None:
    return next((c for c in found if (c.task, c.metric, c.a, c.b) == (task, metric, a, b)), None)


def claims_table(
    facts: dict[str, AdapterFacts], results: dict, found: Sequence[Comparison]
) -> list[str]:
    """The seed's figures next to what was measured here, with a plain verdict."""
    lines = ["| seed's claim | measured here | verdict |", "|---|---|---|"]

    shares = []
    for assistant in ASSISTANTS:
        lora = facts.get(adapter_name(assistant, "lora"))
        qwth = facts.get(adapter_name(assistant, "qwth"))
        if lora and qwth and lora.trainable and qwth.trainable:
            shares.append((assistant, 1 - qwth.trainable / lora.trainable))
    if shares:
        text = "; ".join(f"{a}: {100 * s:.1f}% fewer" for a, s in shares)
        verdict = (
            f"reproduced: {_size_words([s for _, s in shares], 'parameters')}"
            if all(s > 0 for _, s in shares)
            else "not reproduced"
        )
        lines.append(f"| {SEED_CLAIMS['parameters']} | {text} | {verdict} |")

    parts, gains = [], []
    for assistant in ASSISTANTS:
        lora = facts.get(adapter_name(assistant, "lora"))
        qwth = facts.get(adapter_name(assistant, "qwth"))
        equal = loss_at_equal_steps(lora, qwth) if lora and qwth else None
        if equal:
            step, lora_loss, qwth_loss = equal
            gain = (lora_loss - qwth_loss) / lora_loss
            direction = "lower" if gain > 0 else "higher"
            parts.append(
                f"{assistant}: QWTH training loss {abs(100 * gain):.1f}% {direction} than LoRA "
                f"at step {step} ({qwth_loss:.3f} vs {lora_loss:.3f})"
            )
            gains.append(gain)
    if parts:
        verdict = (
            f"direction reproduced (lower loss), effect {_size_words(gains, 'training')}"
            if all(g > 0 for g in gains)
            else "not reproduced: QWTH does not reach a lower training loss"
            if not any(g > 0 for g in gains)
            else "mixed"
        )
        if differing_learning_rates(facts):
            verdict += "; but the methods used different learning rates (see the notes)"
        lines.append(f"| {SEED_CLAIMS['training']} | {'; '.join(parts)} | {verdict} |")

    lora_err = _metric(results, "counselling", "counselling-lora", "error_rate")
    qwth_err = _metric(results, "counselling", "counselling-qwth", "error_rate")
    if lora_err and qwth_err:
        fewer = -stats.relative_change(qwth_err.value, lora_err.value)
        test = _find(found, "counselling", "error_rate", "counselling-qwth", "counselling-lora")
        significant = test is not None and test.p_value < 0.05
        verdict = (
            "direction reproduced (fewer errors"
            + ("" if significant else ", not significant")
            + f"), effect {_size_words([fewer], 'counselling')}"
            if fewer > 0
            else "not reproduced: QWTH makes as many or more errors"
        )
        p = f", paired bootstrap p {_p(test)}" if test else ""
        lines.append(
            f"| {SEED_CLAIMS['counselling']} | next-token error rate {evaluate.format_metric('error_rate', qwth_err)} "
            f"(QWTH) vs {evaluate.format_metric('error_rate', lora_err)} (LoRA): "
            f"{abs(100 * fewer):.1f}% {'fewer' if fewer > 0 else 'more'} errors{p} "
            f"| {verdict} |"
        )

    lora_acc = _metric(results, "math", "math-lora", "accuracy")
    qwth_acc = _metric(results, "math", "math-qwth", "accuracy")
    if lora_acc and qwth_acc:
        test = _find(found, "math", "accuracy", "math-qwth", "math-lora")
        better = qwth_acc.value > lora_acc.value
        significant = test is not None and test.p_value < 0.05
        verdict = (
            ("QWTH more accurate" + ("" if significant else " (not significant)"))
            if better
            else "not reproduced: QWTH is not more accurate than LoRA"
            + ("" if significant else " (nor significantly less)")
        )
        p = f", McNemar p {_p(test)}" if test else ""
        lines.append(
            f"| {SEED_CLAIMS['math']} | GSM8K accuracy LoRA {evaluate.format_metric('accuracy', lora_acc)} "
            f"→ QWTH {evaluate.format_metric('accuracy', qwth_acc)}{p} | {verdict} |"
        )
    return lines


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT)) + "/"
    except ValueError:
        return str(path)


def budget_words(facts: dict[str, AdapterFacts]) -> str | None:
    """How much each adapter was trained, from its metrics.json: the context for every verdict."""
    parts = []
    for name, fact in sorted(facts.items()):
        m = fact.metrics
        if m.get("steps") and m.get("tokens_seen"):
            parts.append(
                f"{name} {m['steps']} steps x {m.get('batch_size', '?')} x {m.get('seq_len', '?')} "
                f"tokens ({int(m['tokens_seen']):,} tokens, {int(m.get('examples_seen', 0)):,} examples)"
            )
    if not parts:
        return None
    text = (
        "- Training budget: " + "; ".join(parts) + ". That is a small fraction of one epoch, "
        "so these figures compare the methods early in training, not at convergence."
    )
    rates = differing_learning_rates(facts)
    if rates:
        text += (
            " Learning rates differ by method (" + ", ".join(f"{n} {lr:g}" for n, lr in rates.items())
            + "): part of a loss difference may come from the rate rather than the method "
            "(docs/ablations.md retrains LoRA at QWTH's rate)."
        )
    return text


def write_report(
    path: Path,
    facts: dict[str, AdapterFacts],
    results: dict[tuple[str, str], ModelResult],
    found: Sequence[Comparison],
    options: EvalOptions,
    command: str,
    plot: Path | None,
    evaluated: bool,
    adapters_dir: Path,
) -> Path:
    math_n = {r.metrics["accuracy"].n for (t, _), r in results.items() if t == "math"}
    counsel_n = {
        r.metrics["error_rate"].n
        for (t, _), r in results.items()
        if t == "counselling" and "error_rate" in r.metrics
    }
    limit_text = (
        f"the first {options.limit} of the 1,319 GSM8K test problems"
        if options.limit
        else "all 1,319 GSM8K test problems"
    )
    pool = (
        "the 117 CounselChat test answers"
        if not options.best_only
        else "the 39 CounselChat test questions, each with its most upvoted answer"
    )
    if options.counsel_dataset == "cpsycound":
        pool = "the 158 CPsyCounD test dialogues (last counsellor turn)"
    counsel_text = (
        f"the first {options.counsel_limit} of {pool}"
        if options.counsel_limit
        else f"all of {pool}"
    )
    lines = [
        "# Results: base model vs LoRA vs QWTH",
        "",
        f"Produced by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"on {machine_text()}.",
        "",
    ]
    if evaluated:
        lines += [
            f"**Evaluation size:** math on {limit_text} (items scored per model: "
            f"{', '.join(map(str, sorted(math_n))) or 'none'}), greedy, temperature 0, "
            f"max {options.math_max_tokens} new tokens, through vLLM's OpenAI-compatible endpoint; "
            f"counselling on {counsel_text} (items scored per model: "
            f"{', '.join(map(str, sorted(counsel_n))) or 'none'}). Intervals are 95% percentile "
            "bootstrap intervals over items (1,000 resamples, seed 0); paired tests compare "
            "two models on the same items.",
            "",
        ]
    else:
        lines += [
            "**No model evaluation in this run** (`--no-eval`): figures from the adapters' files only.",
            "",
        ]
    lines += [
        "## How the seed's claims fare",
        "",
        *claims_table(facts, results, found),
        "",
        "## Adapters",
        "",
        "Trainable parameters as counted by the trainer (QWTH: tensor-train cores, fusion "
        "weights and circuit angles; LoRA: A and B). The compact size is what QWTH needs "
        "to store (its `qwth/` folder); both are served as a PEFT LoRA export of the same rank.",
        "",
        *adapters_table(facts),
        "",
        "## Training loss at equal steps and held-out loss",
        "",
        *training_table(facts),
        "",
    ]
    if plot is not None:
        rel = os.path.relpath(plot, path.parent)
        lines += [f"![LoRA vs QWTH training loss]({rel})", ""]
    if evaluated:
        lines += [
            "## Math assistant: GSM8K exact-match accuracy",
            "",
            *metric_table(
                results,
                "math",
                [("accuracy", "accuracy", True), ("answered", "gave a number", True)],
            ),
            "",
            "## Counselling assistant",
            "",
            "Teacher-forced on the reference therapist answers (in process, transformers + PEFT, "
            "float32): the next-token error rate is the share of answer tokens that are not the "
            "model's top-1 prediction; the loss is the mean cross-entropy per answer token.",
            "",
            *metric_table(
                results,
                "counselling",
                [("error_rate", "next-token error rate", True), ("loss", "loss", False)],
            ),
            "",
            "Generated answers through the endpoint (greedy, "
            f"max {options.counsel_max_tokens} new tokens):",
            "",
            *metric_table(
                results,
                "counselling",
                [
                    ("words", "words", False),
                    ("empty_rate", "empty", True),
                    ("refusal_rate", "refusals", True),
                    ("truncated_rate", "cut at max tokens", True),
                ],
            ),
            "",
            "## Paired comparisons",
            "",
            *comparison_table(found),
            "",
        ]
    lines += [
        "## Notes",
        "",
        "- Base model: SmolLM2-135M-Instruct (bf16 weights); vLLM computes in "
        f"{_serving_dtype_words()} on this machine.",
        f"- Adapters read from `{_shown_path(adapters_dir)}` when this report was written; their "
        "training settings are in `configs/` and each adapter's README.md.",
        '- "vs LoRA" / "vs base": difference in percentage points (pts) or in the '
        "metric's unit, and in parentheses relative to the reference value.",
        "- Per-item results (model outputs, predictions) are cached under "
        "`$QTUNE_HOME/eval/`; rerunning the command reuses them and computes only missing items.",
    ]
    budget = budget_words(facts)
    if budget:
        lines.append(budget)
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


# --------------------------------------------------------------------------- entry points


def run(
    options: EvalOptions,
    api_base: str | None = None,
    api_key: str | None = None,
    output: Path | None = None,
    plot: Path | None = None,
    evaluate_models: bool = True,
    argv: Sequence[str] = (),
) -> int:
    """Read the adapters, evaluate (unless told not to), write the report; return 0."""
    output = output or PROJECT_ROOT / "docs" / "results.md"
    plot = plot or output.parent / "loss_curves.png"
    adapters_dir = options.adapters_dir or settings().adapters_dir
    facts = {}
    for assistant in ASSISTANTS:
        for method in METHODS:
            adapter = read_adapter(adapters_dir / adapter_name(assistant, method))
            if adapter is not None:
                facts[adapter.name] = adapter
    print(f"[bench] adapters found: {', '.join(facts) or 'none'}", file=sys.stderr, flush=True)
    plot_path = plot_loss_curves(facts, plot)
    results: dict[tuple[str, str], ModelResult] = {}
    found: list[Comparison] = []
    if evaluate_models:
        results = evaluate_all(options, api_base, api_key, facts)
        found = all_comparisons(results)
    command = "qtune " + " ".join(argv) if argv else "qtune bench"
    report = write_report(
        output, facts, results, found, options, command, plot_path, evaluate_models, adapters_dir
    )
    print(f"[bench] wrote {report}" + (f" and {plot_path}" if plot_path else ""), flush=True)
    if found:
        print(evaluate.format_report(results, found))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python bench/run_comparison.py ...`` = ``qtune bench ...``."""
    from qtune.cli import main as qtune_main

    return qtune_main(["bench", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
