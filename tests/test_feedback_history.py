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


def test_history_is_per_owner(tmp_path):
    """Each owner lists, reads, renames, deletes and exports only their own conversations;
    rows from before owners existed are the admin's (or the single local user's)."""
    from qtune.ui.app import QtuneUI
    from qtune.ui.state import LOCAL_OWNER

    store = FeedbackStore(tmp_path / "fb.db")
    ann = store.start_conversation("counselling", "chat", owner="user:ann")
    store.add_message(ann, "user", "ann's private worry")
    old = store.start_conversation("math", "chat")  # stored before owners existed
    store.add_message(old, "user", "an old question")
    as_bob = History(store, "user:bob")
    assert as_bob.list() == [] and as_bob.conversation(ann) is None
    for action in (lambda: as_bob.rename(ann, "mine now"), lambda: as_bob.delete(ann),
                   lambda: as_bob.export_json(ann), lambda: as_bob.export_markdown(ann)):
        with pytest.raises(ValueError, match="no such conversation"):
            action()
    assert [s.id for s in History(store, "user:ann").list()] == [ann]
    assert {s.id for s in History(store, "user:ann", see_unowned=True).list()} == {ann, old}

    ui = QtuneUI(api_base="http://127.0.0.1:9/v1", store=store)
    ui.accounts.add("ann", "ann's password", "admin")
    ui.accounts.add("bob", "bob's password")
    ui.login_required = True
    assert ui.history_list("user:bob")[1] == []
    assert set(ui.history_list("user:ann")[1]) == {ann, old}  # the admin sees old rows
    assert "for admins" in ui.leaderboard("math", "user:bob")[3]
    assert "for admins" not in ui.leaderboard("math", "user:ann")[3]
    ui.login_required = False  # one local user, no logins: today's single-user History
    assert set(ui.history_list(LOCAL_OWNER)[1]) == {old}
