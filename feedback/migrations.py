"""The feedback database's schema, as the migrations that build it, oldest first.

``PRAGMA user_version`` holds how many have been applied (qtune.feedback.store).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _migration_1_initial(db: sqlite_utils.Database) -> None:
    """The first schema: conversations, messages, votes and ratings."""
    db["conversations"].create(
        {"id": str, "assistant": str, "mode": str, "created_at": str}, pk="id"
    )
    db["messages"].create(
        {
            "id": int,
            "conversation_id": str,
            "role": str,
            "content": str,
            "model": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("conversation_id", "conversations", "id")],
    )
    db["votes"].create(
        {
            "id": int,
            "conversation_id": str,
            "assistant": str,
            "model_a": str,
            "model_b": str,
            "winner": str,
            "blind": int,
            "comment": str,
            "prompt": str,
            "answer_a": str,
            "answer_b": str,
            "created_at": str,
        },
        pk="id",
    )
    db["ratings"].create(
        {"id": int, "message_id": int, "rating": int, "comment": str, "created_at": str},
        pk="id",
        foreign_keys=[("message_id", "messages", "id")],
    )


def _migration_2_adapter_versions(db: sqlite_utils.Database) -> None:
    """Record which adapter weights answered (retraining keeps the served name), and index
    the columns the leaderboard and export filter on. Older rows get version 'unknown'."""
    db["messages"].add_column("adapter_version", str, not_null_default="unknown")
    db["votes"].add_column("model_a_version", str, not_null_default="unknown")
    db["votes"].add_column("model_b_version", str, not_null_default="unknown")
    db["votes"].create_index(["assistant"], if_not_exists=True)
    db["messages"].create_index(["conversation_id"], if_not_exists=True)
    db["ratings"].create_index(["message_id"], if_not_exists=True)


def _migration_3_message_status(db: sqlite_utils.Database) -> None:
    """An answer is stored as it streams: ``status`` says whether it finished ("complete"),
    is still arriving ("streaming") or stopped early ("incomplete", with ``note`` saying
    why). Rows written before were complete answers."""
    db["messages"].add_column("status", str, not_null_default="complete")
    db["messages"].add_column("note", str)


def _migration_4_titles(db: sqlite_utils.Database) -> None:
    """A conversation may carry the title a person gave it (the History panel)."""
    db["conversations"].add_column("title", str)


def _migration_5_flags_and_siblings(db: sqlite_utils.Database) -> None:
    """Flags on answers, with a reason; a regenerated answer names the one it replaced
    (both stay: a rating refers to one of them)."""
    db["flags"].create({"id": int, "message_id": int, "reason": str, "comment": str,
                        "created_at": str}, pk="id",
                       foreign_keys=[("message_id", "messages", "id")])
    db["messages"].add_column("regenerates", int)


def _migration_6_flag_source(db: sqlite_utils.Database) -> None:
    """Flags come from a person or from the safety screen (qtune.safety)."""
    db["flags"].add_column("source", str, not_null_default="person")


def _migration_7_votes_naming_a_model(db: sqlite_utils.Database) -> None:
    """A vote whose answers name a model is kept but flagged (not blind in effect)."""
    db["votes"].add_column("names_model", int, not_null_default=0)


def _migration_8_endpoint_flags(db: sqlite_utils.Database) -> None:
    """The served endpoint's crisis screen records its events too: no message is stored
    for an API request, so such a flag names the model instead."""
    db["flags"].add_column("model", str)


def _migration_9_accounts(db: sqlite_utils.Database) -> None:
    """Accounts (qtune.feedback.accounts), and who owns each conversation and cast each
    vote and rating. Earlier rows have no owner: only an admin, or the UI's single local
    user, sees them."""
    db["users"].create({"name": str, "password_hash": str, "role": str, "created_at": str},
                       pk="name")
    db["conversations"].add_column("owner", str)
    db["conversations"].create_index(["owner"], if_not_exists=True)
    db["votes"].add_column("voter", str)
    db["ratings"].add_column("voter", str)


#: Applied in order; after migration i the database has ``user_version == i``.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1_initial,
    _migration_2_adapter_versions,
    _migration_3_message_status,
    _migration_4_titles,
    _migration_5_flags_and_siblings,
    _migration_6_flag_source,
    _migration_7_votes_naming_a_model,
    _migration_8_endpoint_flags,
    _migration_9_accounts,
]
