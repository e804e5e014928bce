"""The report's Markdown tables, and the paper's claims next to what was measured."""

from __future__ import annotations

from collections.abc import Sequence

from qtune.eval import stats
from qtune.eval.evaluate import Comparison, format_metric
from qtune.eval.report.facts import (
    LOSS_WINDOW,
    AdapterFacts,
    differing_learning_rates,
    finite,
    loss_at_equal_steps,
)

from qtune.config import DEFAULT_BASE_MODEL
from qtune.vocab import ASSISTANTS, METHOD_LABELS, METHODS, adapter_name

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


def _int(value: int | None) -> str:
    return f"{value:,}" if value is not None else "n/a"


def _bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1024:.1f} KiB" if value < 2**20 else f"{value / 2**20:.2f} MiB"


def _num(value: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if finite(value) else "n/a"


def _pct_change(new: float | None, reference: float | None) -> str:
    if not (finite(new) and finite(reference)) or reference == 0:
        return "n/a"
    return f"{100 * stats.relative_change(new, reference):+.1f}%"


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
            shown = format_metric(key, value) if value else "n/a"
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
    if comparison.mcnemar is None:
        return stats.bootstrap_p_text(comparison.p_value, digits=3)
    return f"{comparison.p_value:.3g}"


def _find(found: Sequence[Comparison], task: str, metric: str, a: str, b: str) -> Comparison | None:
    return next((c for c in found if (c.task, c.metric, c.a, c.b) == (task, metric, a, b)), None)


def claims_table(
    facts: dict[str, AdapterFacts], results: dict, found: Sequence[Comparison]
) -> list[str]:
    """The paper's figures next to what was measured here, with a plain verdict."""
    lines = ["| paper's claim | measured here | verdict |", "|---|---|---|"]

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
            verdict += ("; each method trained at its own learning rate (see the notes; "
                        "docs/study.md compares them at tuned rates over seeds)")
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
            f"| {SEED_CLAIMS['counselling']} | next-token error rate {format_metric('error_rate', qwth_err)} "
            f"(QWTH) vs {format_metric('error_rate', lora_err)} (LoRA): "
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
            f"| {SEED_CLAIMS['math']} | GSM8K accuracy LoRA {format_metric('accuracy', lora_acc)} "
            f"→ QWTH {format_metric('accuracy', qwth_acc)}{p} | {verdict} |"
        )
    return lines
