"""`qtune eval --assistant FILE`: score your own assistant's served adapters, and the base
model, on its held-out rows, by the kinds its file names.

The held-out rows are the ones a default training run holds out (its validation data, or
the slice carved off its training data); each row's last assistant turn is the reference
and everything before it the prompt. ``exact_match`` compares the whole greedy answer
with the reference (whitespace and case aside), ``final_number`` the last number of each
(GSM8K-style, :mod:`qtune.data.answers`). Held-out loss is each adapter's own, from its
metrics.json. Results are cached per item, so an interrupted run resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qtune.eval.items import EvalItem, Record, item_id
from qtune.eval.runner import ResultCache, cache_path, run_items
from qtune.eval.scoring import chat_reply
from qtune.eval.stats import Estimate, bootstrap_mean

from qtune import adapter_format as fmt
from qtune.assistants import AssistantConfig, adapter_assistant
from qtune.config import DEFAULT_BASE_MODEL
from qtune.errors import QtuneError

#: The kinds scored through the endpoint (held-out loss comes from the adapters' files).
GENERATED_KINDS = ("exact_match", "final_number")


def heldout_items(name_or_file: str, limit: int | None = None) -> list[EvalItem]:
    """The held-out rows of an assistant (its name or .toml file) as prompts and
    references."""
    from qtune.finetune.batches import run_records
    from qtune.finetune.config import TrainConfig

    from qtune.assistants import get_assistant

    assistant = get_assistant(name_or_file)
    if not assistant.own_data:
        raise QtuneError(f"assistant {assistant.name!r} trains on shipped data sets: score it "
                         f"with `qtune eval --task {assistant.tasks[0]}`")
    config = TrainConfig(assistant=name_or_file).validate()
    _, held_out, _ = run_records(config)
    items = []
    for index, messages in enumerate(held_out[:limit] if limit else held_out):
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = tuple(messages[:last])
        question = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
        items.append(EvalItem(item_id(index, json.dumps(messages, sort_keys=True)), prompt,
                              question, messages[last]["content"]))
    return items


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def score(kind: str, output: str, reference: str) -> bool:
    from qtune.data.answers import answers_match, extract_final_number

    if kind == "exact_match":
        return _normal(output) == _normal(reference)
    gold = extract_final_number(reference)
    return gold is not None and bool(answers_match(output, gold))


def own_models(client: Any, assistant: AssistantConfig) -> dict[str, str | None]:
    """{served name: its folder} of the adapters recording this assistant, and the base
    model (folder None)."""
    found: dict[str, str | None] = {}
    for model in client.models.list():
        root, parent = getattr(model, "root", None), getattr(model, "parent", None)
        if parent is None:
            if model.id == DEFAULT_BASE_MODEL:
                found[model.id] = None
            continue
        recorded = adapter_assistant(Path(root), model.id) if root else None
        if recorded is not None and recorded.name == assistant.name:
            found[model.id] = root
    if not any(found.values()):
        raise QtuneError(f"no served adapter records assistant {assistant.name!r}: train one "
                         f"with `qtune finetune --assistant FILE` and serve it")
    return found


@dataclass
class OwnResult:
    model: str
    heldout_loss: float | None
    scores: dict[str, Estimate]


def evaluate_own(client: Any, assistant: AssistantConfig, items: list[EvalItem],
                 max_tokens: int = 256, concurrency: int = 4,
                 use_cache: bool = True) -> list[OwnResult]:
    kinds = [k for k in assistant.evaluation if k in GENERATED_KINDS]
    results = []
    for model, root in own_models(client, assistant).items():
        version = fmt.version_from_root(root) if root else "base"
        cache = ResultCache(cache_path("own", assistant.name, "heldout", model, version,
                                       f"t{max_tokens}") if use_cache else None)

        def answer(item: EvalItem, model: str = model) -> Record:
            output, tokens, finish = chat_reply(client, model, item, max_tokens)
            return {"output": output, "reference": item.reference,
                    "completion_tokens": tokens, "finish_reason": finish}

        records = run_items(items, answer, cache, concurrency, desc=model) if kinds else []
        scores = {kind: bootstrap_mean([score(kind, r["output"], r["reference"])
                                        for r in records]) for kind in kinds}
        loss = None
        if root and (Path(root) / fmt.METRICS_FILE).is_file():
            loss = fmt.read_json(Path(root) / fmt.METRICS_FILE).get("final_eval_loss")
        results.append(OwnResult(model, loss, scores))
    return results


def format_own(assistant: AssistantConfig, results: list[OwnResult], n_items: int) -> str:
    kinds = [k for k in assistant.evaluation if k in GENERATED_KINDS]
    lines = [f"{assistant.title} ({assistant.name}): {n_items} held-out rows, greedy answers, "
             "95% bootstrap intervals", "",
             "| model | held-out loss | " + " | ".join(kinds) + " |",
             "|---|---|" + "---|" * len(kinds)]
    for result in results:
        loss = f"{result.heldout_loss:.3f}" if result.heldout_loss is not None else "-"
        cells = [result.scores[k].format(scale=100, suffix="%") for k in kinds]
        lines.append(f"| {result.model} | {loss} | " + " | ".join(cells) + " |")
    skipped = [k for k in assistant.evaluation if k not in (*GENERATED_KINDS, "heldout_loss")]
    if skipped:
        lines += ["", f"not computed for an assistant's own data: {', '.join(skipped)}"]
    return "\n".join(lines)
