"""Preference data for `--objective dpo|kto`: where it comes from and its one shape.

* ``counselchat``: CounselChat's answers to the same question by several therapists, with
  upvotes: the most upvoted answer over each less upvoted one (train split to train,
  validation split to score; the split is by question).
* ``math``: GSM8K's reference solution over a wrong answer the base model itself gave to
  the same problem (``qtune data pairs math`` generates and caches them).
* a ``qtune feedback export`` folder: ``preferences.jsonl`` (decisive Compare votes) for
  DPO; ``ratings.jsonl`` with ``conversations.jsonl`` (thumbs up/down) for KTO. A vote
  whose two answers came from the same model and weights version is skipped.
* a JSONL file in TRL's forms: ``{"prompt", "chosen", "rejected"}`` rows for DPO,
  ``{"prompt", "completion", "label"}`` rows for KTO (a prompt is text or messages).

Every example carries where it came from (``origin``: vote id, models and versions).
Without a held-out split of their own (feedback, a file), a fixed, seeded slice is
carved off, as for an assistant's own chat data.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtune.config import settings
from qtune.errors import QtuneError

#: The preference sources that need no file, and what each is.
BUILT_IN = {
    "counselchat": "CounselChat: the most upvoted therapist answer over a less upvoted one",
    "math": "GSM8K: the reference solution over the base model's own wrong answer",
}
#: Share of a source without its own held-out split that is carved off to score runs.
CARVED_SHARE = 0.1
CARVE_SEED = 1234


@dataclass(frozen=True)
class PreferenceExample:
    """One DPO pair (``rejected`` set) or one KTO rating (``rejected`` None, ``good``)."""

    prompt: tuple[dict[str, str], ...]
    chosen: str  # DPO: the preferred answer; KTO: the rated answer
    rejected: str | None = None
    good: bool = True
    origin: dict[str, Any] = field(default_factory=dict, compare=False)


def _prompt(value: Any, system: str, where: str) -> tuple[dict[str, str], ...]:
    """A prompt (text, or messages) with the assistant's system prompt where it has none."""
    if isinstance(value, str) and value.strip():
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
        messages = [{"role": m.get("role", "user"), "content": m["content"]} for m in value]
    else:
        raise QtuneError(f"{where}: 'prompt' must be text or a list of messages")
    if messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return tuple(messages)


def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise QtuneError(f"{where}: '{key}' must be non-empty text")
    return value


def _jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """("file:line", row) of every JSON object; the first bad line raises (read as chat
    files are, by qtune.data.sources)."""
    from qtune.data.formats import RowProblem
    from qtune.data.sources import jsonl_rows

    if not path.is_file():
        raise QtuneError(f"preference file {path} does not exist")
    for number, row in jsonl_rows(path):
        where = f"{path}:{number}"
        if isinstance(row, RowProblem):
            raise QtuneError(f"{where}: {row}")
        if not isinstance(row, dict):
            raise QtuneError(f"{where}: expected a JSON object")
        yield where, row


# ----------------------------------------------------------------------------- sources

def counselchat_pairs(split: str, system: str) -> list[PreferenceExample]:
    from qtune.data.datasets import load_counselchat

    by_question: dict[int, list] = {}
    for answer in load_counselchat(split, best_only=False):
        by_question.setdefault(answer.question_id, []).append(answer)
    pairs = []
    for question_id, answers in sorted(by_question.items()):
        answers.sort(key=lambda a: (-a.upvotes, a.answer_rank))
        best = answers[0]
        for other in answers[1:]:
            if other.upvotes < best.upvotes:
                pairs.append(PreferenceExample(
                    _prompt(best.user_text, system, "counselchat"), best.answer_text,
                    other.answer_text, origin={"question_id": question_id,
                                               "upvotes": [best.upvotes, other.upvotes]}))
    return pairs


def math_pairs_path(split: str) -> Path:
    return settings().home / "preferences" / f"math-{split}.jsonl"


def file_examples(path: Path, objective: str, system: str) -> list[PreferenceExample]:
    """TRL's preference (prompt, chosen, rejected) or unpaired (prompt, completion,
    label) rows; the export's preferences.jsonl is the first form."""
    examples = []
    for where, row in _jsonl(path):
        prompt = _prompt(row.get("prompt"), system, where)
        origin = {k: row[k] for k in ("vote_id", "chosen_model", "rejected_model",
                                      "chosen_version", "rejected_version") if k in row}
        if objective == "dpo":
            if _same_model(row):
                continue  # one model's two answers say nothing about which model is better
            examples.append(PreferenceExample(prompt, _text(row, "chosen", where),
                                              _text(row, "rejected", where), origin=origin))
        else:
            if not isinstance(row.get("label"), bool):
                raise QtuneError(f"{where}: 'label' must be true (good) or false (bad)")
            examples.append(PreferenceExample(prompt, _text(row, "completion", where),
                                              good=row["label"], origin=origin))
    return examples


def _same_model(row: dict) -> bool:
    models = (row.get("chosen_model"), row.get("rejected_model"))
    versions = (row.get("chosen_version"), row.get("rejected_version"))
    return models[0] is not None and models[0] == models[1] and versions[0] == versions[1]


def rating_examples(folder: Path, system: str) -> list[PreferenceExample]:
    """Thumbs up/down of an export folder, each with the question it answered."""
    messages = {}
    for _, conversation in _jsonl(folder / "conversations.jsonl"):
        history = []
        for message in conversation.get("messages", []):
            messages[message["id"]] = (tuple(history), message)
            history.append({"role": message["role"], "content": message["content"]})
    examples = []
    for where, rating in _jsonl(folder / "ratings.jsonl"):
        if rating.get("message_id") not in messages:
            raise QtuneError(f"{where}: rates message {rating.get('message_id')}, which "
                             "conversations.jsonl does not hold (export both together)")
        history, answer = messages[rating["message_id"]]
        if not history or rating.get("rating") not in (1, -1):
            continue
        examples.append(PreferenceExample(
            _prompt(list(history), system, where), answer["content"], good=rating["rating"] == 1,
            origin={"rating_id": rating.get("id"), "model": answer.get("model"),
                    "version": answer.get("adapter_version")}))
    return examples


# ----------------------------------------------------------------------------- a run's data

def _system_prompt(config: Any) -> str:
    from qtune.assistants import assistant_of_task, get_assistant

    assistant = (get_assistant(config.assistant) if config.assistant
                 else assistant_of_task(config.task))
    if assistant is None:
        raise QtuneError(f"task {config.task!r} has no assistant to take a system prompt from")
    return assistant.system_prompt


def carve(examples: list[PreferenceExample]) -> tuple[list, list]:
    """(train, held-out): a fixed, seeded slice of at least one example is held out."""
    if len(examples) < 2:
        raise QtuneError(f"{len(examples)} preference example(s): too few to train on and "
                         "hold some out; collect more votes or ratings")
    order = list(range(len(examples)))
    random.Random(CARVE_SEED).shuffle(order)
    held = set(order[:max(1, int(len(examples) * CARVED_SHARE))])
    return ([e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])


def examples_digest(train: list[PreferenceExample], held: list[PreferenceExample]) -> str:
    """A short fingerprint of a run's preference data as trained and scored (prompts,
    answers, labels): runs that must compare on the same pairs can check it (math pairs
    are generated by the model, so they may differ from machine to machine)."""
    digest = hashlib.sha256()
    for part, examples in (("train", train), ("held", held)):
        for example in examples:
            digest.update(json.dumps([part, example.prompt, example.chosen, example.rejected,
                                      example.good], ensure_ascii=False).encode())
    return digest.hexdigest()[:12]


def preference_examples(config: Any) -> tuple[list, list, str]:
    """(train, held-out, what the held-out set is) of a dpo/kto run."""
    source, system = config.preferences, _system_prompt(config)
    if source == "counselchat":
        if config.objective != "dpo":
            raise QtuneError("counselchat gives pairs: use --objective dpo")
        return (counselchat_pairs("train", system), counselchat_pairs("validation", system),
                "CounselChat validation pairs")
    if source == "math":
        if config.objective != "dpo":
            raise QtuneError("math gives pairs: use --objective dpo")
        paths = [math_pairs_path(split) for split in ("train", "dev")]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise QtuneError(f"no math pairs at {missing[0]}: generate them with "
                             "`qtune data pairs math` (the base model answers GSM8K problems)")
        train, held = (file_examples(p, "dpo", system) for p in paths)
        return train, held, "math dev pairs"
    path = Path(source).expanduser()
    if path.is_dir():
        if config.objective == "dpo":
            examples = file_examples(path / "preferences.jsonl", "dpo", system)
        else:
            examples = rating_examples(path, system)
    else:
        examples = file_examples(path, config.objective, system)
    train, held = carve(examples)
    return train, held, f"carved from {path.name} ({len(held)} examples)"


def check_preferences(config: Any) -> None:
    """Read the run's preference data now, so a bad or empty file is refused before any
    model loads."""
    train, held, _ = preference_examples(config)
    if not train or not held:
        raise QtuneError(f"--preferences {config.preferences}: no usable "
                         f"{'pairs' if config.objective == 'dpo' else 'ratings'} (train "
                         f"{len(train)}, held-out {len(held)})")
    if config.objective == "kto" and len({e.good for e in train}) < 2:
        raise QtuneError(f"--preferences {config.preferences}: KTO needs both good and bad "
                         "ratings in its training data")
