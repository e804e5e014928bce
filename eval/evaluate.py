"""Evaluate served assistants the way users meet them, and score reference answers.

Two kinds of measurement:

* **Through the OpenAI-compatible endpoint** (what users get): GSM8K exact-match
  accuracy of the final number (greedy, temperature 0), and for counselling the
  length of generated answers and how often they are empty or refusals. Requests run
  concurrently from a thread pool; every finished item is appended to a JSONL cache at
  once, so an interrupted run resumes with only the missing items.
* **Teacher-forced, in process** (logits are needed, which the endpoint does not give):
  the loss and next-token error rate (1 - top-1 accuracy) of the reference
  CounselChat answers under base + adapter (transformers + PEFT) -- the "errors in
  response generation" of the counselling assistant made measurable.

Every figure carries a 95% bootstrap interval (:mod:`qtune.eval.stats`); two models
scored on the same items are compared with McNemar's test (accuracy) or a paired
bootstrap (rates, losses).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qtune.eval import stats
from qtune.eval.items import Record, counsel_items, math_items
from qtune.eval.runner import ResultCache, adapter_dir_for, cache_path, model_fingerprint, run_items
from qtune.eval.scoring import (
    DEFAULT_MAX_SEQ_TOKENS,
    generation_caller,
    load_scoring_model,
    make_client,
    math_caller,
    teacher_forced_caller,
)

from qtune.config import settings
from qtune.errors import QtuneError

log = logging.getLogger(__name__)

DEFAULT_MATH_MAX_TOKENS = 256
DEFAULT_COUNSEL_MAX_TOKENS = 256
DEFAULT_CONCURRENCY = 12


@dataclass
class ModelResult:
    """Figures for one model on one task, with the per-item records behind them."""

    model: str
    task: str
    metrics: dict[str, stats.Estimate] = field(default_factory=dict)
    records: dict[str, list[Record]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "metrics": {name: asdict(value) for name, value in self.metrics.items()},
            "items": {kind: len(rows) for kind, rows in self.records.items()},
        }


def summarize_math(records: Sequence[Record]) -> dict[str, stats.Estimate]:
    correct = [float(r["correct"]) for r in records]
    answered = [float(r.get("predicted") is not None) for r in records]
    return {
        "accuracy": stats.bootstrap_mean(correct),
        "answered": stats.bootstrap_mean(answered),
    }


def summarize_generation(records: Sequence[Record]) -> dict[str, stats.Estimate]:
    return {
        "words": stats.bootstrap_mean([r["words"] for r in records]),
        "completion_tokens": stats.bootstrap_mean([r.get("completion_tokens", 0) for r in records]),
        "empty_rate": stats.bootstrap_mean([float(r["empty"]) for r in records]),
        "refusal_rate": stats.bootstrap_mean([float(r["refusal"]) for r in records]),
        "truncated_rate": stats.bootstrap_mean(
            [float(r.get("finish_reason") == "length") for r in records]
        ),
    }


def summarize_teacher_forced(records: Sequence[Record]) -> dict[str, stats.Estimate]:
    """Token-weighted figures: total errors / total tokens, total NLL / total tokens."""
    tokens = np.array([r["tokens"] for r in records], dtype=float)
    errors = np.array([r["errors"] for r in records], dtype=float)
    nll = np.array([r["nll_sum"] for r in records], dtype=float)
    return {
        "error_rate": stats.bootstrap_mean(errors / tokens, weights=tokens),
        "loss": stats.bootstrap_mean(nll / tokens, weights=tokens),
    }


@dataclass(frozen=True)
class Comparison:
    """Model ``a`` minus model ``b`` on one metric over the same items."""

    task: str
    metric: str
    a: str
    b: str
    difference: stats.Estimate
    p_value: float
    test: str
    mcnemar: stats.McNemarResult | None = None


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    data = asdict(comparison)
    return data


def compare_math(a: ModelResult, b: ModelResult) -> Comparison:
    first, second = _paired(a.records["math"], b.records["math"])
    correct_a = [r["correct"] for r in first]
    correct_b = [r["correct"] for r in second]
    test = stats.mcnemar(correct_a, correct_b)
    diff = stats.paired_bootstrap(np.array(correct_a, float), np.array(correct_b, float))
    return Comparison(
        "math", "accuracy", a.model, b.model, diff.difference, test.exact_p, "McNemar exact", test
    )


def compare_teacher_forced(
    a: ModelResult, b: ModelResult, metric: str = "error_rate"
) -> Comparison:
    first, second = _paired(a.records["teacher_forced"], b.records["teacher_forced"])
    tokens = np.array([r["tokens"] for r in first], dtype=float)
    key = "errors" if metric == "error_rate" else "nll_sum"
    rate_a = np.array([r[key] for r in first], dtype=float) / tokens
    rate_b = np.array([r[key] for r in second], dtype=float) / tokens
    diff = stats.paired_bootstrap(rate_a, rate_b, weights=tokens)
    return Comparison(
        "counselling", metric, a.model, b.model, diff.difference, diff.p_value, "paired bootstrap"
    )


def _paired(first: Sequence[Record], second: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """Records of both models on the items both have, in the same order."""
    by_id = {r["id"]: r for r in second}
    shared = [r for r in first if r["id"] in by_id]
    return shared, [by_id[r["id"]] for r in shared]


# --------------------------------------------------------------------------- drivers


@dataclass
class EvalOptions:
    """What to evaluate and how; the defaults are those of `qtune eval`."""

    tasks: tuple[str, ...] = ("math", "counselling")
    limit: int | None = None
    counsel_limit: int | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    math_max_tokens: int = DEFAULT_MATH_MAX_TOKENS
    counsel_max_tokens: int = DEFAULT_COUNSEL_MAX_TOKENS
    counsel_dataset: str = "counselchat"
    best_only: bool = True
    teacher_forced: bool = True
    generate: bool = True
    use_cache: bool = True
    progress: bool = True
    adapters_dir: Path | None = None


def _cache(options: EvalOptions, kind: str, dataset: str, model: str, tag: str) -> ResultCache:
    if not options.use_cache:
        return ResultCache(None)
    fingerprint = model_fingerprint(model, options.adapters_dir)
    return ResultCache(cache_path(kind, dataset, "test", model, fingerprint, tag))


def evaluate_math(client: Any, model: str, options: EvalOptions) -> ModelResult:
    items = math_items("test", options.limit)
    cache = _cache(options, "math", "gsm8k", model, f"greedy-t{options.math_max_tokens}")
    records = run_items(
        items,
        math_caller(client, model, options.math_max_tokens),
        cache,
        options.concurrency,
        desc=f"math {model}",
        progress=options.progress,
    )
    return ModelResult(model, "math", summarize_math(records), {"math": records})


def evaluate_counselling(client: Any | None, model: str, options: EvalOptions) -> ModelResult:
    items = counsel_items(options.counsel_dataset, "test", options.counsel_limit, options.best_only)
    dataset = options.counsel_dataset + ("" if options.best_only else "-all")
    result = ModelResult(model, "counselling")
    if options.teacher_forced:
        scorer_model, tokenizer = load_scoring_model(adapter_dir_for(model, options.adapters_dir))
        cache = _cache(options, "teacher_forced", dataset, model, f"max{DEFAULT_MAX_SEQ_TOKENS}")
        records = run_items(
            items,
            teacher_forced_caller(scorer_model, tokenizer),
            cache,
            1,
            desc=f"teacher-forced {model}",
            progress=options.progress,
        )
        del scorer_model
        result.records["teacher_forced"] = records
        result.metrics.update(summarize_teacher_forced(records))
    if options.generate and client is not None:
        cache = _cache(options, "generate", dataset, model, f"greedy-t{options.counsel_max_tokens}")
        records = run_items(
            items,
            generation_caller(client, model, options.counsel_max_tokens),
            cache,
            options.concurrency,
            desc=f"counselling {model}",
            progress=options.progress,
        )
        result.records["generate"] = records
        result.metrics.update(summarize_generation(records))
    return result


def evaluate_models(
    client: Any | None, models: Iterable[str], options: EvalOptions
) -> dict[tuple[str, str], ModelResult]:
    """Every requested task for every model, keyed by ``(task, model)``."""
    results: dict[tuple[str, str], ModelResult] = {}
    for model in models:
        if "math" in options.tasks:
            if client is None:
                raise QtuneError("math accuracy needs an endpoint (--api-base or a started server)")
            results["math", model] = evaluate_math(client, model, options)
        if "counselling" in options.tasks:
            results["counselling", model] = evaluate_counselling(client, model, options)
    return results


def comparisons(
    results: dict[tuple[str, str], ModelResult], pairs: Iterable[tuple[str, str]]
) -> list[Comparison]:
    """Paired comparisons ``a - b`` for every pair evaluated on a task."""
    found = []
    for a, b in pairs:
        math_a, math_b = results.get(("math", a)), results.get(("math", b))
        if math_a and math_b:
            found.append(compare_math(math_a, math_b))
        tf_a, tf_b = results.get(("counselling", a)), results.get(("counselling", b))
        if tf_a and tf_b and "teacher_forced" in tf_a.records and "teacher_forced" in tf_b.records:
            found.append(compare_teacher_forced(tf_a, tf_b, "error_rate"))
            found.append(compare_teacher_forced(tf_a, tf_b, "loss"))
    return found


_PERCENT_METRICS = {
    "accuracy",
    "answered",
    "error_rate",
    "empty_rate",
    "refusal_rate",
    "truncated_rate",
}


def format_metric(name: str, estimate: stats.Estimate) -> str:
    if name in _PERCENT_METRICS:
        return estimate.format(scale=100, suffix="%")
    return estimate.format(digits=3 if name == "loss" else 1)


def format_report(results: dict[tuple[str, str], ModelResult], found: Sequence[Comparison]) -> str:
    """Plain-text summary printed by `qtune eval`."""
    lines = []
    for (task, model), result in results.items():
        lines.append(f"{task:<12} {model}")
        for name, estimate in result.metrics.items():
            lines.append(f"  {name:<18} {format_metric(name, estimate)}  (n={estimate.n})")
    for comparison in found:
        scale, suffix = (100, " pts") if comparison.metric != "loss" else (1, "")
        diff = comparison.difference.format(
            scale=scale, digits=1 if scale == 100 else 3, suffix=suffix
        )
        extra = ""
        if comparison.mcnemar is not None:
            extra = f", only {comparison.a} right {comparison.mcnemar.only_a}, only {comparison.b} right {comparison.mcnemar.only_b}"
        lines.append(
            f"{comparison.task} {comparison.metric}: {comparison.a} - {comparison.b} = {diff}"
            f" ({comparison.test} p={comparison.p_value:.3g}{extra})"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- server


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (so an evaluation server never meets another)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served_endpoint(
    api_base: str | None, api_key: str | None, adapters_dir: Path | None = None
) -> Iterator[tuple[str, str | None, list[str]]]:
    """``(api_base, api_key, served model names)``: the given endpoint, or a vLLM server
    started here with the base model and every adapter in ``adapters_dir`` (stopped on exit)."""
    if api_base:
        yield api_base, api_key, list_models(api_base, api_key)
        return
    from qtune.serve.server import ServeConfig, VLLMServer

    config = ServeConfig(
        port=free_port(),
        api_key=api_key,
        adapters_dir=adapters_dir or settings().adapters_dir,
        kv_cache_gib=2,
    )
    server = VLLMServer(config)
    log.info("starting vLLM on %s with %s", server.api_base, ", ".join(server.served_models))
    with server:
        yield server.api_base, api_key, server.served_models


def list_models(api_base: str, api_key: str | None) -> list[str]:
    """The model names an OpenAI-compatible endpoint serves."""
    try:
        return [model.id for model in make_client(api_base, api_key).models.list()]
    except Exception as error:  # the openai client raises many connection error types
        raise QtuneError(
            f"cannot list the models of {api_base}: {error} (is the server running? "
            "does it need --api-key?)"
        ) from error
