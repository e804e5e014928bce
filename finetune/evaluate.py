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

Every figure carries a 95% bootstrap interval (:mod:`qtune.finetune.stats`); two models
scored on the same items are compared with McNemar's test (accuracy) or a paired
bootstrap (rates, losses).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qtune.finetune import stats

from qtune.config import DEFAULT_BASE_MODEL, settings
from qtune.errors import QtuneError

log = logging.getLogger(__name__)

DEFAULT_MATH_MAX_TOKENS = 256
DEFAULT_COUNSEL_MAX_TOKENS = 256
DEFAULT_CONCURRENCY = 12
#: Longest prompt + reference answer scored teacher-forced (longer answers are cut).
DEFAULT_MAX_SEQ_TOKENS = 1024
REQUEST_TIMEOUT_S = 600.0
#: Label of tokens that are not scored (PyTorch's cross-entropy ignore index).
IGNORE_INDEX = -100

# Phrases that open or make up a refusal rather than an attempt to help. A disclaimer
# followed by advice ("I'm not a therapist, but ...") is not a refusal.
_REFUSAL_RE = re.compile(
    r"\b(?:i'?m sorry,? but i can(?:'|no)t|i can(?:'|no)t (?:help|assist|provide|answer|do that)"
    r"|i am unable to|i'?m unable to|i(?: a|')m not able to (?:help|assist|provide)"
    r"|as an ai(?: language model)?,? i (?:can(?:'|no)t|am not able))",
    re.IGNORECASE,
)

Record = dict[str, Any]


# --------------------------------------------------------------------------- items


@dataclass(frozen=True)
class EvalItem:
    """One evaluation item.

    ``messages`` is the prompt sent to the endpoint, ``reference`` what the reply is
    scored against (the GSM8K final number, or the reference counselling answer), and
    ``conversation`` the whole reference conversation as the trainer renders it (for
    teacher-forced scoring of its assistant turns).
    """

    id: str
    messages: tuple[dict[str, str], ...]
    question: str
    reference: str
    conversation: tuple[dict[str, str], ...] = ()


def item_id(index: int, text: str) -> str:
    """Stable id: position in the split plus a hash of the text, so a cache written
    from a different version of the data is not silently reused."""
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"{index:05d}-{digest}"


def _messages(
    assistant: str, user_text: str, history: Sequence[Any] = ()
) -> tuple[dict[str, str], ...]:
    from qtune.data.prompts import build_messages

    return tuple(build_messages(assistant, user_text, list(history)))


def math_items(split: str = "test", limit: int | None = None) -> list[EvalItem]:
    """GSM8K items (the whole test set by default; the first ``limit`` otherwise)."""
    from qtune.data.datasets import load_gsm8k

    return [
        EvalItem(
            item_id(i, ex.question), _messages("math", ex.question), ex.question, ex.final_answer
        )
        for i, ex in enumerate(load_gsm8k(split, limit=limit))
    ]


def counsel_items(
    dataset: str = "counselchat",
    split: str = "test",
    limit: int | None = None,
    best_only: bool = True,
) -> list[EvalItem]:
    """Counselling items: CounselChat questions with their (most upvoted) therapist answer,
    or CPsyCounD dialogues up to their last counsellor turn."""
    from qtune.data.datasets import load_counselchat, load_cpsycound
    from qtune.data.prompts import example_messages

    items = []
    if dataset == "counselchat":
        for i, ex in enumerate(load_counselchat(split, best_only=best_only, limit=limit)):
            items.append(
                EvalItem(
                    item_id(i, ex.user_text + ex.answer_text),
                    _messages("counselling", ex.user_text),
                    ex.user_text,
                    ex.answer_text,
                    tuple(example_messages("counselling", ex)),
                )
            )
    elif dataset == "cpsycound":
        for i, dialogue in enumerate(load_cpsycound(split, limit=limit)):
            turns = [m for m in dialogue.messages if m["role"] != "system"]
            last = max(j for j, m in enumerate(turns) if m["role"] == "assistant")
            if last < 1:
                continue  # a dialogue that opens with the counsellor has no prompt
            question = turns[last - 1]["content"]
            items.append(
                EvalItem(
                    item_id(i, dialogue.id),
                    _messages("counselling", question, turns[: last - 1]),
                    question,
                    turns[last]["content"],
                    tuple(example_messages("cpsycound", dialogue)),
                )
            )
    else:
        raise QtuneError(f"unknown counselling dataset {dataset!r}: use counselchat or cpsycound")
    return items


# --------------------------------------------------------------------------- caching


class ResultCache:
    """Per-item results as JSON lines, appended (and flushed) as each item finishes.

    A line cut short by an interruption is ignored on reading, so the item is simply
    computed again.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._line_start_checked = False

    def load(self) -> dict[str, Record]:
        if self.path is None or not self.path.exists():
            return {}
        records: dict[str, Record] = {}
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "id" in record:
                    records[record["id"]] = record
        return records

    def append(self, record: Record) -> None:
        if self.path is None:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                if not self._line_start_checked:
                    self._end_partial_line()
                    self._line_start_checked = True
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()

    def _end_partial_line(self) -> None:
        """Close a line cut short by an interruption so the next record starts afresh."""
        assert self.path is not None
        with self.path.open("rb+") as handle:
            handle.seek(0, 2)
            if handle.tell() == 0:
                return
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def run_items(
    items: Sequence[EvalItem],
    evaluate_one: Callable[[EvalItem], Record],
    cache: ResultCache,
    concurrency: int = 1,
    desc: str = "items",
    progress: bool = True,
) -> list[Record]:
    """Results for ``items`` in order: cached ones are reused, the others computed by
    ``evaluate_one`` (``concurrency`` at a time) and cached as they finish."""
    cached = cache.load()
    missing = [item for item in items if item.id not in cached]
    results = {item.id: cached[item.id] for item in items if item.id in cached}
    if missing:
        log.info("%s: %d cached, %d to compute", desc, len(results), len(missing))
    bar = _progress_bar(len(items), len(results), desc, enabled=progress and bool(missing))
    try:
        if concurrency <= 1:
            for item in missing:
                results[item.id] = _finish(item, evaluate_one(item), cache, bar)
        else:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                futures = {pool.submit(evaluate_one, item): item for item in missing}
                for future in as_completed(futures):
                    item = futures[future]
                    results[item.id] = _finish(item, future.result(), cache, bar)
    finally:
        if bar is not None:
            bar.close()
    return [results[item.id] for item in items]


def _finish(item: EvalItem, record: Record, cache: ResultCache, bar: Any) -> Record:
    record = {"id": item.id, **record}
    cache.append(record)
    if bar is not None:
        bar.update(1)
    return record


def _progress_bar(total: int, done: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    import sys

    from tqdm import tqdm

    # In a log file (no terminal) a line every 30 s rather than a redrawn bar.
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=done,
        desc=desc,
        unit="item",
        dynamic_ncols=interactive,
        mininterval=0.5 if interactive else 30.0,
    )


def cache_path(kind: str, dataset: str, split: str, model: str, fingerprint: str, tag: str) -> Path:
    """Where the per-item results of one model on one dataset live (under QTUNE_HOME)."""
    safe_model = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    return (
        settings().home
        / "eval"
        / f"{dataset}-{split}"
        / kind
        / f"{safe_model}.{fingerprint}.{tag}.jsonl"
    )


def model_fingerprint(model: str, adapters_dir: Path | None = None) -> str:
    """Short hash of the adapter weights served under ``model`` ("base" for the base
    model, "ext" for a name with no local adapter folder): retrained adapters get a
    fresh cache instead of stale results."""
    folder = adapter_dir_for(model, adapters_dir, required=False)
    if folder is None:
        return "base" if model == DEFAULT_BASE_MODEL else "ext"
    digest = hashlib.sha256()
    with (folder / "adapter_model.safetensors").open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def adapter_dir_for(
    model: str, adapters_dir: Path | None = None, required: bool = True
) -> Path | None:
    """The PEFT folder of a served adapter name; ``None`` for the base model."""
    if model == DEFAULT_BASE_MODEL:
        return None
    folder = (adapters_dir or settings().adapters_dir) / model
    if (folder / "adapter_config.json").is_file() and (
        folder / "adapter_model.safetensors"
    ).is_file():
        return folder
    if not required:
        return None
    raise QtuneError(
        f"no adapter folder for model {model!r} at {folder} (adapter_config.json and "
        "adapter_model.safetensors): train it with `qtune finetune` or pass a served base model"
    )


# --------------------------------------------------------------------------- endpoint


def make_client(api_base: str, api_key: str | None) -> Any:
    from openai import OpenAI

    # One INFO line per request would bury the progress bar.
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)

    return OpenAI(
        base_url=api_base, api_key=api_key or "EMPTY", timeout=REQUEST_TIMEOUT_S, max_retries=2
    )


def _chat(client: Any, model: str, item: EvalItem, max_tokens: int) -> tuple[str, int, str]:
    response = client.chat.completions.create(
        model=model,
        messages=list(item.messages),
        temperature=0.0,
        max_tokens=max_tokens,
    )
    choice = response.choices[0]
    tokens = response.usage.completion_tokens if response.usage else 0
    return choice.message.content or "", int(tokens), str(choice.finish_reason)


def math_record(item: EvalItem, output: str) -> Record:
    """Score one GSM8K reply: the extracted final number against the gold answer."""
    from qtune.data.answers import answers_match, extract_final_number

    predicted = extract_final_number(output)
    return {
        "question": item.question,
        "gold": item.reference,
        "output": output,
        "predicted": predicted,
        "correct": bool(answers_match(output, item.reference)),
    }


def math_caller(client: Any, model: str, max_tokens: int) -> Callable[[EvalItem], Record]:
    def evaluate_one(item: EvalItem) -> Record:
        output, tokens, finish = _chat(client, model, item, max_tokens)
        return {**math_record(item, output), "completion_tokens": tokens, "finish_reason": finish}

    return evaluate_one


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL_RE.search(text[:300]))


def generation_record(item: EvalItem, output: str) -> Record:
    """Describe one generated counselling answer (length, empty, refusal)."""
    stripped = output.strip()
    return {
        "question": item.question,
        "output": output,
        "words": len(stripped.split()),
        "empty": not stripped,
        "refusal": bool(stripped) and is_refusal(stripped),
    }


def generation_caller(client: Any, model: str, max_tokens: int) -> Callable[[EvalItem], Record]:
    def evaluate_one(item: EvalItem) -> Record:
        output, tokens, finish = _chat(client, model, item, max_tokens)
        return {
            **generation_record(item, output),
            "completion_tokens": tokens,
            "finish_reason": finish,
        }

    return evaluate_one


# --------------------------------------------------------------------------- teacher forcing


@dataclass(frozen=True)
class TokenStats:
    """Teacher-forced scores of one reference answer."""

    tokens: int
    nll_sum: float
    errors: int  # reference tokens that were not the model's top-1 prediction

    @property
    def loss(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else float("nan")

    @property
    def error_rate(self) -> float:
        return self.errors / self.tokens if self.tokens else float("nan")


def score_sequence(model: Any, input_ids: Sequence[int], labels: Sequence[int]) -> TokenStats:
    """Loss and top-1 errors on the labelled tokens (``labels[t] != -100``), each
    predicted from all tokens before it.

    The logit at position ``t`` predicts token ``t + 1``, so the label at ``t`` is
    scored by the logits at ``t - 1``.
    """
    import torch

    if len(input_ids) != len(labels):
        raise ValueError(f"{len(input_ids)} input ids but {len(labels)} labels")
    ids = torch.tensor([list(input_ids)], dtype=torch.long)
    targets = torch.tensor(list(labels)[1:], dtype=torch.long)
    mask = targets != IGNORE_INDEX
    if not bool(mask.any()):
        raise ValueError("no labelled tokens to score")
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logits, targets = logits[mask], targets[mask]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    errors = (logits.argmax(dim=-1) != targets).sum()
    return TokenStats(int(targets.numel()), float(nll), int(errors))


def encode_for_scoring(
    tokenizer: Any, item: EvalItem, max_tokens: int = DEFAULT_MAX_SEQ_TOKENS
) -> tuple[list[int], list[int]]:
    """Token ids and labels of the reference conversation, rendered exactly as for
    training (labels on the assistant replies and their end-of-turn token only)."""
    from qtune.data.prompts import tokenize_for_training

    if not item.conversation:
        raise ValueError(f"item {item.id} has no reference conversation to score")
    encoded = tokenize_for_training(tokenizer, list(item.conversation), max_tokens)
    return encoded["input_ids"], encoded["labels"]


def load_scoring_model(adapter_dir: Path | None, base_model: str | None = None) -> tuple[Any, Any]:
    """The base model (float32 for exact losses) with the adapter applied, and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qtune.model import resolve_model

    base_path = resolve_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval(), tokenizer


def teacher_forced_caller(
    model: Any, tokenizer: Any, max_tokens: int = DEFAULT_MAX_SEQ_TOKENS
) -> Callable[[EvalItem], Record]:
    def evaluate_one(item: EvalItem) -> Record:
        ids, labels = encode_for_scoring(tokenizer, item, max_tokens)
        scores = score_sequence(model, ids, labels)
        return {"question": item.question, **asdict(scores)}

    return evaluate_one


# --------------------------------------------------------------------------- summaries


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
