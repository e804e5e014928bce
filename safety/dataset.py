"""The labelled crisis data set: one file format, read in one place.

``data/messages.jsonl`` holds single messages, one JSON object per line:
``{"lang", "label", "kind", "split", "text"}``. ``data/conversations.jsonl`` holds short
conversations (the user's side only): ``{"lang", "label", "kind", "split", "messages"}``.
Both were written for qtune, independently of the pattern list. The split is fixed in the
file: ``train`` fits the classifier, ``dev`` chooses everything (features, regularisation,
threshold, conversation window), ``test`` is only ever reported.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
MESSAGES_FILE = DATA_DIR / "messages.jsonl"
CONVERSATIONS_FILE = DATA_DIR / "conversations.jsonl"

LANGS = ("en", "zh", "mixed")
LABELS = ("crisis", "safe")
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class _Labelled:
    label: str
    lang: str
    kind: str
    split: str

    @property
    def is_crisis(self) -> bool:
        return self.label == "crisis"


@dataclass(frozen=True, kw_only=True)
class Message(_Labelled):
    text: str


@dataclass(frozen=True, kw_only=True)
class Conversation(_Labelled):
    messages: tuple[str, ...]  # the user's side, oldest first


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        problems = [f"{key}={row.get(key)!r}" for key, allowed in
                    (("lang", LANGS), ("label", LABELS), ("split", SPLITS))
                    if row.get(key) not in allowed]
        if problems:
            raise ValueError(f"{path}:{number}: not allowed: {', '.join(problems)}")
        rows.append(row)
    return rows


def load_messages(split: str | None = None) -> list[Message]:
    rows = _read_jsonl(MESSAGES_FILE)
    return [Message(**row) for row in rows if split is None or row["split"] == split]


def load_conversations(split: str | None = None) -> list[Conversation]:
    rows = _read_jsonl(CONVERSATIONS_FILE)
    return [Conversation(**{**row, "messages": tuple(row["messages"])}) for row in rows
            if split is None or row["split"] == split]


def training_data_hash() -> str:
    """Identifies the rows a model was fitted and tuned on (train and dev, not test), so
    that a test can tell when the shipped model is older than the data."""
    used = [m for m in load_messages() if m.split != "test"]
    digest = hashlib.sha256()
    for message in used:
        digest.update(f"{message.label}\t{message.split}\t{message.text}\n".encode())
    return digest.hexdigest()[:16]
