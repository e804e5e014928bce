"""Math preference pairs: GSM8K's reference solution over a wrong answer the base model
itself gave to the same problem (the usual construction of math DPO data).

The base model answers the first N problems of a split greedily through vLLM (a server
started here, or ``--api-base``); every answer whose final number is wrong gives a pair.
Answers are cached per problem (an interrupted run resumes), or kept in a folder of one's
choice (``--answers``) that can travel with a study, and the pairs are written to
``$QTUNE_HOME/preferences/math-<split>.jsonl`` (TRL's preference form plus their origin),
which ``--preferences math`` reads: train pairs to train, dev pairs to score.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from qtune.finetune.preference_data import math_pairs_path

from qtune.config import DEFAULT_BASE_MODEL

log = logging.getLogger(__name__)


def pairs_from_answers(items: list, answers: list[dict], model: str) -> list[dict]:
    """One pair per wrong answer: (question, reference solution, the model's answer)."""
    from qtune.data.answers import answers_match
    from qtune.data.datasets import load_gsm8k

    solutions = {}
    for example in load_gsm8k("train") + load_gsm8k("dev"):
        solutions[example.question] = example.solution_text
    pairs = []
    for item, answer in zip(items, answers, strict=True):
        output = answer["output"]
        if not output.strip() or answers_match(output, item.reference):
            continue
        pairs.append({"prompt": item.question, "chosen": solutions[item.question],
                      "rejected": output, "chosen_model": "reference",
                      "rejected_model": model, "problem_id": item.id})
    return pairs


def answers_file(folder: Path, split: str, max_tokens: int) -> Path:
    """An answers folder's file of one split (the tag keeps other answer lengths apart)."""
    return folder / f"math-{split}.t{max_tokens}.jsonl"


def generate(split: str, limit: int, api_base: str | None = None, api_key: str | None = None,
             max_tokens: int = 256, concurrency: int = 8,
             answers: Path | None = None) -> tuple[Path, int, int]:
    """Write the pairs of ``split``; (their file, pairs, problems asked). ``answers``: a
    folder of the model's answers to reuse, and to add the missing ones to (the same
    answers give the same pairs on any machine; the model is asked nothing it answered)."""
    from qtune.eval.items import math_items
    from qtune.eval.runner import ResultCache, cache_path, run_items
    from qtune.eval.scoring import chat_reply, make_client

    items = math_items(split, limit=limit)
    cache = ResultCache(answers_file(answers, split, max_tokens) if answers else cache_path(
        "pairs", "gsm8k", split, DEFAULT_BASE_MODEL, "base", f"t{max_tokens}"))

    def ask(client):
        def one(item):
            output, tokens, finish = chat_reply(client, DEFAULT_BASE_MODEL, item, max_tokens)
            return {"output": output, "finish_reason": finish, "completion_tokens": tokens}
        return one

    cached = cache.load()
    if all(item.id in cached for item in items):  # nothing to ask: no server needed
        replies = [cached[item.id] for item in items]
    elif api_base:
        replies = run_items(items, ask(make_client(api_base, api_key)), cache, concurrency,
                            desc=f"math {split}")
    else:
        from qtune.eval.evaluate import free_port
        from qtune.serve.server import ServeConfig, VLLMServer

        with VLLMServer(ServeConfig(port=free_port(), adapters_dir=None)) as server:
            server.start(wait=True)
            replies = run_items(items, ask(make_client(server.api_base, None)), cache,
                                concurrency, desc=f"math {split}")
    pairs = pairs_from_answers(items, replies, DEFAULT_BASE_MODEL)
    path = math_pairs_path(split)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    temporary.replace(path)
    return path, len(pairs), len(items)
