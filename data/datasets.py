"""Loaders for the training and evaluation data of the two assistants.

* math: GSM8K grade-school word problems (``openai/gsm8k``, config ``main``).
* counselling: CounselChat therapist answers (``nbertagnolli/counsel-chat``).
* cpsycound: CPsyCounD multi-turn Chinese counselling dialogues (local copy only).

With a data folder (the ``data_dir`` argument, else ``$QTUNE_DATA_DIR``) the loaders read
its JSON-lines files, laid out as::

    math/gsm8k/{train,test}.jsonl
    counselling/counselchat/{train,validation,test}.jsonl
    counselling/cpsycound/{train,test}.jsonl

Without one they fetch GSM8K and CounselChat from the Hugging Face Hub through the
``datasets`` library. GSM8K has no dev split, so ``split="dev"`` is the last
``GSM8K_DEV_SIZE`` rows of train and ``split="train"`` leaves them out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from qtune.config import settings
from qtune.errors import QtuneError
from qtune.vocab import TASKS

from .answers import normalize_number

Task = Literal["math", "counselling", "cpsycound"]

#: Rows at the end of GSM8K train held out as its dev split.
GSM8K_DEV_SIZE = 200

GSM8K_HUB_ID = "openai/gsm8k"
GSM8K_HUB_CONFIG = "main"
COUNSELCHAT_HUB_ID = "nbertagnolli/counsel-chat"

#: Local file stem of each split, per task; "dev" and "validation" are the same split.
SPLITS: dict[str, tuple[str, ...]] = {
    "math": ("train", "dev", "test"),
    "counselling": ("train", "validation", "test"),
    "cpsycound": ("train", "test"),
}
_SPLIT_ALIASES = {"dev": "validation", "validation": "dev", "val": "validation"}

_FILES = {
    "math": "math/gsm8k/{split}.jsonl",
    "counselling": "counselling/counselchat/{split}.jsonl",
    "cpsycound": "counselling/cpsycound/{split}.jsonl",
}

_CALCULATOR_NOTE_RE = re.compile(r"<<[^<>]*>>")
# "word.Word" glued together by the CounselChat scraper (not "U.S." or "e.g.").
_MISSING_SPACE_RE = re.compile(r"(?<=[a-z]{2}[.!?])(?=[A-Z][a-z])")


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class MathExample:
    """One GSM8K problem: the worked ``solution`` ends in a ``#### N`` line."""

    question: str
    solution: str
    final_answer: str

    @property
    def solution_text(self) -> str:
        """The solution without the ``<<48/2=24>>`` calculator notes (what the model learns)."""
        return _CALCULATOR_NOTE_RE.sub("", self.solution)


@dataclass(frozen=True)
class CounselExample:
    """One therapist answer to a CounselChat question (``answer_rank`` 0 = most upvoted)."""

    question_id: int
    title: str
    question: str
    answer: str
    topic: str
    upvotes: int
    answer_rank: int

    @property
    def user_text(self) -> str:
        """What the client wrote: the question body, or the title when the body is empty."""
        return self.question.strip() or self.title.strip()

    @property
    def answer_text(self) -> str:
        """The answer with the scraper's missing spaces after full stops put back."""
        return _MISSING_SPACE_RE.sub(" ", self.answer.strip())


@dataclass(frozen=True)
class Dialogue:
    """One multi-turn conversation in OpenAI message format (user first)."""

    id: str
    messages: list[dict[str, str]]


Example = MathExample | CounselExample | Dialogue


# ----------------------------------------------------------------------------- reading


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The data folder to read: the argument, else ``$QTUNE_DATA_DIR``, else None (Hub)."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
    else:
        path = settings().data_dir
        if path is None:
            return None
    if not path.is_dir():
        raise QtuneError(
            f"data folder {path} does not exist: set QTUNE_DATA_DIR (or --data-dir) to the "
            "folder holding math/ and counselling/, or unset it to load from the Hugging Face Hub"
        )
    return path


def _canonical_split(task: str, split: str) -> str:
    if task not in SPLITS:
        raise QtuneError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    valid = SPLITS[task]
    if split in valid:
        return split
    alias = _SPLIT_ALIASES.get(split)
    if alias in valid:
        return alias
    raise QtuneError(f"unknown split {split!r} for {task}: choose one of {', '.join(valid)}")


def data_file(task: str, split: str, data_dir: Path) -> Path:
    """The JSON-lines file of a task's split inside ``data_dir`` (math dev lives in train)."""
    split = _canonical_split(task, split)
    stem = "train" if (task, split) == ("math", "dev") else split
    return data_dir / _FILES[task].format(split=stem)


@dataclass(frozen=True)
class _Row:
    """A raw record and where it came from, for error messages."""

    source: str
    line: int
    data: dict[str, Any]

    def where(self) -> str:
        return f"{self.source} line {self.line}"

    def text(self, field: str, allow_empty: bool = False) -> str:
        value = self.data.get(field)
        if value is None and allow_empty:
            return ""
        if not isinstance(value, str) or not (value.strip() or allow_empty):
            problem = "missing field" if field not in self.data else "empty or non-text field"
            raise QtuneError(f"{self.where()}: {problem} {field!r}")
        return value

    def integer(self, field: str) -> int:
        value = self.data.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problem = "missing field" if field not in self.data else "non-numeric field"
            raise QtuneError(f"{self.where()}: {problem} {field!r}")
        return int(value)


def _read_jsonl(path: Path) -> Iterator[_Row]:
    if not path.is_file():
        raise QtuneError(
            f"dataset file {path} is missing. Point QTUNE_DATA_DIR (or --data-dir) at a folder "
            "laid out like math/gsm8k/train.jsonl, counselling/counselchat/train.jsonl, "
            "counselling/cpsycound/train.jsonl, or unset it to load GSM8K and CounselChat "
            "from the Hugging Face Hub."
        )
    # Read bytes and decode line by line, so bad bytes are reported with their line.
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise QtuneError(
                    f"{path} line {number}: not UTF-8 text (byte {error.start + 1} of the line "
                    "cannot be decoded); re-save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise QtuneError(f"{path} line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(data, dict):
                raise QtuneError(f"{path} line {number}: expected a JSON object")
            yield _Row(str(path), number, data)


def _load_hub(name: str, config: str | None = None) -> Any:
    """A Hub dataset (all splits); the clear error says what to do offline."""
    try:
        from datasets import load_dataset

        return load_dataset(name, config) if config else load_dataset(name)
    except Exception as error:  # network, auth or cache problems all end the same way
        raise QtuneError(
            f"could not load {name} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            "Is this machine offline, or the Hub unreachable? Without network access, set "
            "QTUNE_DATA_DIR (or --data-dir) to a local copy of the datasets (layout: "
            "docs/configuration.md)."
        ) from error


def _hub_rows(dataset: Iterable[dict[str, Any]], source: str) -> Iterator[_Row]:
    for index, data in enumerate(dataset, start=1):
        yield _Row(source, index, dict(data))


def _take(items: Iterable[Any], limit: int | None) -> list[Any]:
    if limit is not None and limit < 0:
        raise QtuneError(f"limit must be zero or positive, not {limit}")
    result = []
    for item in items:
        if limit is not None and len(result) >= limit:
            break
        result.append(item)
    return result


# ----------------------------------------------------------------------------- GSM8K


def parse_final_answer(solution: str) -> str | None:
    """The normalised number after the last ``####`` of a GSM8K solution."""
    if "####" not in solution:
        return None
    return normalize_number(solution.rsplit("####", 1)[1].strip())


def _math_example(row: _Row) -> MathExample:
    question = row.text("question")
    solution = row.text("answer")
    final = parse_final_answer(solution)
    if final is None:
        raise QtuneError(f"{row.where()}: field 'answer' does not end in a '#### <number>' line")
    return MathExample(question=question.strip(), solution=solution.strip(), final_answer=final)


def _dev_slice(rows: list[Any], split: str) -> list[Any]:
    if split == "dev":
        return rows[-GSM8K_DEV_SIZE:]
    if split == "train":
        return rows[:-GSM8K_DEV_SIZE]
    return rows


def load_gsm8k(
    split: str = "train", data_dir: str | Path | None = None, limit: int | None = None
) -> list[MathExample]:
    """GSM8K problems of ``split`` ("train", "dev" = last 200 of train, "test")."""
    split = _canonical_split("math", split)
    folder = resolve_data_dir(data_dir)
    if folder is not None:
        rows: Iterable[_Row] = _read_jsonl(data_file("math", split, folder))
    else:
        hub_split = "test" if split == "test" else "train"
        dataset = _load_hub(GSM8K_HUB_ID, GSM8K_HUB_CONFIG)[hub_split]
        rows = _hub_rows(dataset, f"{GSM8K_HUB_ID}[{hub_split}]")
    if split != "test":
        # The dev slice is defined on the whole train file, so read it all before taking.
        rows = _dev_slice(list(rows), split)
    return _take((_math_example(row) for row in rows), limit)


# ----------------------------------------------------------------------------- CounselChat


def _counsel_example(row: _Row) -> CounselExample:
    return CounselExample(
        question_id=row.integer("question_id"),
        title=row.text("title", allow_empty=True).strip(),
        question=row.text("question", allow_empty=True).strip(),
        answer=row.text("answer"),
        topic=row.text("topic", allow_empty=True).strip(),
        upvotes=row.integer("upvotes"),
        answer_rank=row.integer("answer_rank"),
    )


def _hub_counsel_split(question_id: Any) -> str:
    """A stable split for Hub rows without a split column: about 85/10/5 by question."""
    bucket = int(hashlib.md5(str(question_id).encode()).hexdigest(), 16) % 20
    return "test" if bucket == 0 else "validation" if bucket <= 2 else "train"


def _counselchat_hub_rows(split: str) -> Iterator[_Row]:
    """Hub rows renamed to the local fields, ranked by upvotes within each question."""
    dataset = _load_hub(COUNSELCHAT_HUB_ID)
    records = [dict(record) for name in dataset for record in dataset[name]]
    return _rank_hub_counsel_records(records, split, COUNSELCHAT_HUB_ID)


def _rank_hub_counsel_records(
    records: list[dict[str, Any]], split: str, source: str
) -> Iterator[_Row]:
    """Hub-named answer records of ``split`` as local rows with ``answer_rank`` filled in.

    The split comes from a ``split`` column when there is one ("val" = validation),
    else from a hash of the question id.
    """
    by_question: dict[Any, list[dict[str, Any]]] = {}
    for record in records:
        by_question.setdefault(record.get("questionID"), []).append(record)
    for index, (question_id, answers) in enumerate(by_question.items(), start=1):
        raw_split = answers[0].get("split") or _hub_counsel_split(question_id)
        if {"val": "validation", "dev": "validation"}.get(raw_split, raw_split) != split:
            continue
        answers = [answer for answer in answers if (answer.get("answerText") or "").strip()]
        # sorted() is stable: equally voted answers keep the dataset's order.
        ranked = sorted(answers, key=lambda answer: -(answer.get("upvotes") or 0))
        for rank, answer in enumerate(ranked):
            yield _Row(
                source,
                index,
                {
                    "question_id": question_id,
                    "title": answer.get("questionTitle"),
                    "question": answer.get("questionText"),
                    "answer": answer.get("answerText"),
                    "topic": answer.get("topic"),
                    "upvotes": answer.get("upvotes") or 0,
                    "answer_rank": rank,
                },
            )


def load_counselchat(
    split: str = "train",
    best_only: bool = True,
    data_dir: str | Path | None = None,
    limit: int | None = None,
) -> list[CounselExample]:
    """CounselChat answers of ``split``; ``best_only`` keeps the top-voted answer per question."""
    split = _canonical_split("counselling", split)
    folder = resolve_data_dir(data_dir)
    if folder is not None:
        rows: Iterable[_Row] = _read_jsonl(data_file("counselling", split, folder))
    else:
        rows = _counselchat_hub_rows(split)
    examples = (_counsel_example(row) for row in rows)
    if best_only:
        examples = (example for example in examples if example.answer_rank == 0)
    return _take(examples, limit)


# ----------------------------------------------------------------------------- CPsyCounD


def _dialogue(row: _Row) -> Dialogue:
    identifier = row.text("id")
    messages = row.data.get("messages")
    if not isinstance(messages, list) or not messages:
        problem = "missing field" if "messages" not in row.data else "empty or non-list field"
        raise QtuneError(f"{row.where()}: {problem} 'messages'")
    cleaned = []
    for position, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ("system", "user", "assistant")
            or not isinstance(message.get("content"), str)
        ):
            raise QtuneError(
                f"{row.where()}: message {position} needs a 'role' (user/assistant/system) "
                "and a text 'content'"
            )
        cleaned.append({"role": message["role"], "content": message["content"]})
    if not any(message["role"] == "assistant" for message in cleaned):
        raise QtuneError(f"{row.where()}: dialogue {identifier!r} has no assistant message")
    return Dialogue(id=identifier, messages=cleaned)


def load_cpsycound(
    split: str = "train", data_dir: str | Path | None = None, limit: int | None = None
) -> list[Dialogue]:
    """CPsyCounD dialogues of ``split`` ("train" or "test"); needs the local data folder."""
    split = _canonical_split("cpsycound", split)
    folder = resolve_data_dir(data_dir)
    if folder is None:
        raise QtuneError(
            "CPsyCounD has no Hugging Face Hub copy that qtune can rely on: set QTUNE_DATA_DIR "
            "(or --data-dir) to a folder holding counselling/cpsycound/{train,test}.jsonl"
        )
    return _take(
        (_dialogue(row) for row in _read_jsonl(data_file("cpsycound", split, folder))), limit
    )


# ----------------------------------------------------------------------------- any task


def load_task(
    task: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    best_only: bool = True,
) -> list[Any]:
    """Records of ``task`` ("math", "counselling" or "cpsycound"); ``best_only`` is for counselling."""
    if task == "math":
        return load_gsm8k(split, data_dir=data_dir, limit=limit)
    if task == "counselling":
        return load_counselchat(split, best_only=best_only, data_dir=data_dir, limit=limit)
    if task == "cpsycound":
        return load_cpsycound(split, data_dir=data_dir, limit=limit)
    raise QtuneError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")


def split_names(task: str) -> tuple[str, ...]:
    """The splits ``task`` offers."""
    if task not in SPLITS:
        raise QtuneError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    return SPLITS[task]
