"""The History panel's store side on a real SQLite file: list, rename, delete, export."""

from __future__ import annotations

import json

import pytest
from qtune.feedback.history import History, default_title
from qtune.feedback.store import FeedbackStore


@pytest.fixture()
def history(tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    chat = store.start_conversation("math", "chat")
    store.add_message(chat, "user", "What is 12 times 7, explained slowly for a child?")
    answer = store.add_message(chat, "assistant", "84", "math-qwth", "abc", status="incomplete")
    store.update_message(answer, "84.", "incomplete", "stopped by the user")
    store.rate_message(answer, 1)
    compare = store.start_conversation("counselling", "compare")
    store.add_message(compare, "user", "I cannot sleep")
    store.start_conversation("math", "chat")  # nothing said: not listed
    return History(store), chat, compare


def test_list_rename_export_and_delete(history):
    history, chat, compare = history
    listed = history.list()
    assert [s.id for s in listed] == [compare, chat]  # newest first
    assert listed[1].title == default_title("What is 12 times 7, explained slowly for a child?")
    assert listed[1].models == ("math-qwth",) and listed[1].messages == 2
    assert history.rename(chat, "  Times   tables ") == "Times tables"
    assert history.list()[1].title == "Times tables"
    with pytest.raises(ValueError):
        history.rename(chat, "   ")
    exported = json.loads(history.export_json(chat))
    assert [m["content"] for m in exported["messages"]] == [
        "What is 12 times 7, explained slowly for a child?", "84."]
    markdown = history.export_markdown(chat)
    assert markdown.startswith("# Times tables")
    assert "**math-qwth** *(incomplete: stopped by the user)*:" in markdown
    history.delete(chat)
    assert [s.id for s in history.list()] == [compare]
    assert history.store.ratings() == []  # the deleted answer's rating went with it
    assert history.conversation(chat) is None


def test_default_titles_are_short():
    assert default_title("  a   b  ") == "a b"
    assert len(default_title("x" * 500)) == 60 and default_title(None) == "(no question)"
