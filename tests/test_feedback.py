"""The feedback store on real SQLite files: schema, migrations, concurrency, failures, export."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from qtune.feedback.export import export
from qtune.feedback.store import (
    SCHEMA_VERSION,
    FeedbackStore,
    FeedbackWriteError,
    Vote,
)


def make_vote(winner: str = "model_a", n: int = 0, conversation_id: str = "c") -> Vote:
    return Vote(
        conversation_id=conversation_id,
        assistant="math",
        model_a="math-qwth",
        model_b="math-lora",
        winner=winner,
        prompt=f"What is {n} + 1?",
        answer_a=f"{n + 1}",
        answer_b=f"{n + 2}",
        blind=True,
        model_a_version="abc123",
    )


def columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def test_schema_wal_and_version(tmp_path):
    path = tmp_path / "fb.db"
    store = FeedbackStore(path)
    conversation = store.start_conversation("math", "compare")
    store.record_vote(make_vote(conversation_id=conversation))
    assert store.schema_version == SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert {"conversations", "messages", "votes", "ratings"} <= tables
    assert {"model_a_version", "model_b_version", "winner", "blind", "comment"} <= columns(
        path, "votes"
    )
    assert "adapter_version" in columns(path, "messages")
    vote = store.votes()[0]
    assert vote["winner"] == "model_a" and vote["blind"] is True
    assert vote["model_a_version"] == "abc123"
    assert vote["created_at"].endswith("+00:00")  # UTC ISO


def test_invalid_values_rejected(tmp_path):
    with pytest.raises(ValueError):
        make_vote(winner="a")
    store = FeedbackStore(tmp_path / "fb.db")
    with pytest.raises(ValueError):
        store.rate_message(1, 0)
    with pytest.raises(ValueError):
        store.start_conversation("math", "duel")


def test_migration_from_version_1(tmp_path):
    path = tmp_path / "old.db"
    old = FeedbackStore(path, target_version=1)
    conversation = old.start_conversation("math", "chat")
    with sqlite3.connect(path) as conn:  # a row written by the version-1 code
        conn.execute(
            "insert into votes (conversation_id, assistant, model_a, model_b, winner, blind,"
            " comment, prompt, answer_a, answer_b, created_at) values"
            " (?, 'math', 'x', 'y', 'tie', 0, '', 'p', 'a', 'b', '2026-01-01T00:00:00+00:00')",
            (conversation,),
        )
    assert old.schema_version == 1
    assert "model_a_version" not in columns(path, "votes")

    new = FeedbackStore(path)
    assert new.schema_version == SCHEMA_VERSION
    votes = new.votes()
    assert len(votes) == 1 and votes[0]["model_a_version"] == "unknown"
    new.record_vote(make_vote(conversation_id=conversation))
    assert len(new.votes()) == 2


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "fb.db"
    FeedbackStore(path).start_conversation("math", "compare")  # create the schema first
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        store = FeedbackStore(path, busy_timeout=30.0)
        try:
            for i in range(20):
                store.record_vote(make_vote(n=worker * 100 + i, conversation_id=str(worker)))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*) from votes").fetchone()[0] == 1000
        assert conn.execute("select count(distinct prompt) from votes").fetchone()[0] == 1000


def test_locked_database_raises_and_writes_nothing(tmp_path):
    path = tmp_path / "fb.db"
    store = FeedbackStore(path, busy_timeout=0.2, retries=2)
    store.start_conversation("math", "compare")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(FeedbackWriteError, match="locked"):
            store.record_vote(make_vote())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.votes() == []
    store.record_vote(make_vote())  # the same vote goes through once the lock is gone
    assert len(store.votes()) == 1


def test_unwritable_path_raises_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    store = FeedbackStore(blocker / "fb.db")  # constructing does not touch the disk
    with pytest.raises(FeedbackWriteError, match="QTUNE_DB"):
        store.record_vote(make_vote())


def test_database_path_is_a_folder(tmp_path):
    with pytest.raises(FeedbackWriteError, match="feedback database"):
        FeedbackStore(tmp_path).record_vote(make_vote())


def test_export_files(tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    conversation = store.start_conversation("math", "compare")
    user = store.add_message(conversation, "user", "What is 1 + 1?")
    answer = store.add_message(conversation, "assistant", "2", "math-qwth", "abc123")
    store.rate_message(answer, 1, "right")
    store.rate_message(user + 1, -1)
    store.record_vote(make_vote("model_a", 1, conversation))
    store.record_vote(make_vote("model_b", 2, conversation))
    store.record_vote(make_vote("tie", 3, conversation))
    store.record_vote(make_vote("tie (bothbad)", 4, conversation))
    store.flag_message(answer, "wrong", "says 2")
    with pytest.raises(ValueError, match="reason must be one of"):
        store.flag_message(answer, "boring")

    counts = export(store, tmp_path / "out")
    assert counts == {"votes": 4, "ratings": 2, "flags": 1, "conversations": 1,
                      "preferences": 2}

    def read(name: str) -> list[dict]:
        lines = (tmp_path / "out" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    preferences = read("preferences")
    assert (preferences[0]["prompt"], preferences[0]["chosen"], preferences[0]["rejected"]) == (
        "What is 1 + 1?", "2", "3",
    )
    assert (preferences[1]["chosen"], preferences[1]["rejected"]) == ("4", "3")
    assert preferences[1]["chosen_model"] == "math-lora"
    conversations = read("conversations")
    assert [m["role"] for m in conversations[0]["messages"]] == ["user", "assistant"]
    assert conversations[0]["messages"][1]["adapter_version"] == "abc123"
    assert {r["rating"] for r in read("ratings")} == {1, -1}
    assert [(f["message_id"], f["reason"]) for f in read("flags")] == [(answer, "wrong")]
    assert [v["winner"] for v in read("votes")] == ["model_a", "model_b", "tie", "tie (bothbad)"]


def test_cli_export_and_leaderboard(tmp_path, capsys):
    from qtune.cli import main

    db = tmp_path / "fb.db"
    store = FeedbackStore(db)
    for n, winner in enumerate(["model_a", "model_a", "model_b", "tie"]):
        store.record_vote(make_vote(winner, n))
    assert main(["feedback", "export", "--db", str(db), "--out", str(tmp_path / "out")]) == 0
    assert "preferences.jsonl: 3 rows" in capsys.readouterr().out
    assert len((tmp_path / "out" / "votes.jsonl").read_text().splitlines()) == 4
    assert main(["feedback", "leaderboard", "--db", str(db), "--rounds", "20"]) == 0
    printed = capsys.readouterr().out
    assert "math-qwth" in printed and "math-lora" in printed
