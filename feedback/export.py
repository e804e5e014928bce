"""Feedback as files: JSON Lines of every table, and the decisive votes as DPO
preference pairs (prompt, chosen, rejected) ready for preference training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads EXPORT_FILES at start-up; the store's imports are slow
    from qtune.feedback.store import FeedbackStore


def preferences(store: FeedbackStore) -> list[dict]:
    """Decisive votes as (prompt, chosen, rejected) pairs, the input of DPO training."""
    pairs = []
    for vote in store.votes():
        if vote["winner"] not in ("model_a", "model_b"):
            continue  # ties say nothing about which answer to prefer
        a_won = vote["winner"] == "model_a"
        pairs.append(
            {
                "prompt": vote["prompt"],
                "chosen": vote["answer_a"] if a_won else vote["answer_b"],
                "rejected": vote["answer_b"] if a_won else vote["answer_a"],
                "assistant": vote["assistant"],
                "chosen_model": vote["model_a"] if a_won else vote["model_b"],
                "rejected_model": vote["model_b"] if a_won else vote["model_a"],
                # the weights versions: a pair from one model's one version says nothing
                "chosen_version": vote["model_a_version"] if a_won else vote["model_b_version"],
                "rejected_version": vote["model_b_version"] if a_won else vote["model_a_version"],
                "vote_id": vote["id"],
            }
        )
    return pairs

#: The files `qtune feedback export` writes, and what each holds (the CLI and docs say the same).
EXPORT_FILES = {
    "votes": "one row per Compare vote",
    "ratings": "one row per thumbs up or down",
    "flags": "one row per flagged answer (reason, model, and the crisis screen's events)",
    "conversations": "every conversation with its messages nested",
    "preferences": "prompt, chosen, rejected from every decisive vote (the input of DPO trainers)",
}


def export(store: FeedbackStore, out_dir: str | Path) -> dict[str, int]:
    """Write votes, ratings, conversations and preferences as JSON Lines; return row counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "votes": store.votes(),
        "ratings": store.ratings(),
        "flags": store.flags(),
        "conversations": store.conversations(),
        "preferences": preferences(store),
    }
    assert set(tables) == set(EXPORT_FILES)
    for name, rows in tables.items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {name: len(rows) for name, rows in tables.items()}
