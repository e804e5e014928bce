"""The whole comparison behind docs/results.md: base model vs LoRA vs QWTH, for both
assistants.

From the adapters' own files (``adapters/<name>/metrics.json``, ``log.csv``, the
``qwth/`` compact folder): trainable parameters, adapter size on disk, training loss
at equal steps, held-out loss and training throughput. Through ``qtune eval``'s
functions: GSM8K accuracy (endpoint, greedy) and the counselling next-token error
rate (teacher-forced, in process) plus generated-answer statistics (endpoint), each
with a 95% bootstrap interval and paired tests. Writes a Markdown report and a PNG of
the training-loss curves; per-item results are cached, so a rerun resumes.

Run by `qtune report` (alias `qtune bench`).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from qtune.eval import evaluate
from qtune.eval.evaluate import Comparison, EvalOptions, ModelResult
from qtune.eval.report.facts import AdapterFacts, budget_words, read_adapter
from qtune.eval.report.plots import plot_loss_curves
from qtune.eval.report.tables import (
    adapters_table,
    claims_table,
    comparison_table,
    metric_table,
    training_table,
)

from qtune.config import DEFAULT_BASE_MODEL, PROJECT_ROOT, settings
from qtune.vocab import ASSISTANTS, METHODS, adapter_name


def _serving_dtype_words() -> str:
    from qtune.hardware import serving_dtype

    return "float32 (no native bf16 on this CPU)" if serving_dtype() == "float32" else "bf16"


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


def _shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT)) + "/"
    except ValueError:
        return str(path)


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
        # No clock time: a report changes only when its content does.
        f"Produced by `{command}` on {machine_text()}.",
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
        "## How the paper's claims fare",
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
        "- Base model: the embedded SmolLM2-135M-Instruct, a Q4_1 GGUF dequantised to bf16 "
        "weights by `qtune model prepare` (4-bit rounding shows in every figure here); vLLM "
        f"computes in {_serving_dtype_words()} on this machine.",
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
    command = "qtune " + " ".join(argv) if argv else "qtune report"
    report = write_report(
        output, facts, results, found, options, command, plot_path, evaluate_models, adapters_dir
    )
    print(f"[bench] wrote {report}" + (f" and {plot_path}" if plot_path else ""), flush=True)
    if found:
        print(evaluate.format_report(results, found))
    return 0
