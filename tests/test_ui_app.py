"""UI logic without a browser: model names, adapter versions, an endpoint that is down,
input checks, and a vote that survives a locked database (real SQLite, real HTTP client)."""

from __future__ import annotations

import hashlib
import sqlite3
import warnings

import gradio as gr
import pytest
from qtune.feedback.store import FeedbackStore, Vote
from qtune.ui.app import QtuneUI, parse_auth
from qtune.ui.endpoint import (
    Endpoint,
    EndpointError,
    default_pair,
    parse_model,
    sort_models,
)
from qtune.ui.state import CompareSession
from ui_fixtures import free_port

from qtune.adapter_format import snapshot_name, weights_version


def test_parse_model_names():
    assert parse_model("smollm2-135m-instruct") == parse_model("smollm2-135m-instruct", None)
    base = parse_model("smollm2-135m-instruct")
    assert (base.method, base.assistant, base.label) == ("base", None, "base")
    qwth = parse_model("math-qwth", "smollm2-135m-instruct")
    assert (qwth.assistant, qwth.method, qwth.label) == ("math", "qwth", "quantum-tuned (QWTH)")
    lora = parse_model("counselling-lora", "smollm2-135m-instruct")
    assert (lora.assistant, lora.label) == ("counselling", "LoRA baseline")
    other = parse_model("math-dora", "smollm2-135m-instruct")
    assert (other.assistant, other.method, other.label) == ("math", "dora", "dora adapter")
    assert base.serves("math") and base.serves("counselling")
    assert qwth.serves("math") and not qwth.serves("counselling")


def test_default_pair_prefers_qwth_vs_lora():
    served = [parse_model("smollm2-135m-instruct"),
              parse_model("math-lora", "b"), parse_model("math-qwth", "b"),
              parse_model("counselling-lora", "b")]
    assert default_pair(served, "math") == ("math-qwth", "math-lora")
    assert default_pair(served, "counselling") == ("counselling-lora", "smollm2-135m-instruct")
    assert default_pair(served[:1], "math") is None


def test_adapter_version_is_weights_hash(tmp_path):
    """The UI reads an adapter's version from the root the server reports for it."""
    folder = tmp_path / "math-qwth"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"weights v1")
    expected = hashlib.sha256(b"weights v1").hexdigest()[:12]
    assert weights_version(folder) == expected
    served_root = str(tmp_path / "served" / snapshot_name("math-qwth", expected))
    assert parse_model("math-qwth", "smollm2-135m-instruct", served_root).version == expected
    assert parse_model("smollm2-135m-instruct").version == "base"
    assert parse_model("math-qwth", "smollm2-135m-instruct", str(folder)).version == "unknown"


def test_endpoint_down_is_reported_plainly(tmp_path):
    api_base = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(EndpointError, match="not reachable"):
        Endpoint(api_base, timeout=2).models()
    ui = QtuneUI(api_base=api_base, store=FeedbackStore(tmp_path / "fb.db"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gr.Warning outside a request becomes a warning
        chat, model_a, model_b, status = ui.refresh("math", "", "", "")
    assert "not reachable" in status and api_base in status
    assert chat == gr.update()  # the lists keep what they had


def test_input_checks():
    assert QtuneUI.check_input("  hi  ") == "hi"
    with pytest.raises(gr.Error):
        QtuneUI.check_input("   ")
    with pytest.raises(gr.Error):
        QtuneUI.check_input("x" * 5000)


def test_parse_auth():
    assert parse_auth("ann:secret:x") == ("ann", "secret:x")
    assert parse_auth(None) is None
    with pytest.raises(Exception, match="USER:PASSWORD"):
        parse_auth("ann")


def test_vote_kept_when_database_is_locked(tmp_path):
    path = tmp_path / "fb.db"
    store = FeedbackStore(path, busy_timeout=0.2, retries=2)
    store.start_conversation("math", "compare", "c1")
    ui = QtuneUI(api_base=f"http://127.0.0.1:{free_port()}/v1", store=store)
    session = CompareSession(conversation_id="c1", assistant="math", left="math-qwth",
                             right="math-lora")
    session.pending_vote = Vote("c1", "math", "math-qwth", "math-lora", "tie", "p", "a", "b")

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session, message, *buttons = ui.vote("model_b", "close call", session)[:6]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "not saved" in message and "locked" in message
    assert session.pending_vote is not None  # kept for the retry
    assert all(b["interactive"] for b in buttons)
    assert store.votes() == []

    session, message, *_ = ui.vote("model_b", "close call", session)
    assert "saved" in message and session.pending_vote is None and session.revealed
    (row,) = store.votes()
    assert (row["winner"], row["comment"], row["model_b"]) == ("model_b", "close call",
                                                               "math-lora")


def test_votes_need_reading_time_a_short_comment_and_count_only_when_blind(tmp_path):
    """A vote sooner than a person can read both answers, or with a 1 MB comment, is not
    stored (the vote stays pending); named votes are stored but not in the leaderboard."""
    import time

    from qtune.feedback import leaderboard as lb
    from qtune.ui.state import MAX_COMMENT_CHARS, MIN_READ_SECONDS

    store = FeedbackStore(tmp_path / "fb.db")
    ui = QtuneUI(api_base="http://127.0.0.1:9/v1", store=store)

    def answered(blind: bool, seconds_ago: float) -> CompareSession:
        session = CompareSession(conversation_id="c", assistant="math", left="math-qwth",
                                 right="math-lora", blind=blind)
        session.pending_vote = Vote(conversation_id="c", assistant="math", model_a="math-qwth",
                                    model_b="math-lora", winner="tie", prompt="2+2?",
                                    answer_a="4", answer_b="5", blind=blind)
        session.answered_at = time.monotonic() - seconds_ago
        return session

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gr.Warning outside a request becomes a warning
        session, message, *_ = ui.vote("model_a", "", answered(True, 0.1))
        assert "Read both answers first" in message and session.pending_vote is not None
        session, message, *_ = ui.vote("model_a", "x" * (MAX_COMMENT_CHARS + 1),
                                       answered(True, MIN_READ_SECONDS + 1))
        assert "keep it under" in message and session.pending_vote is not None
    assert store.votes() == []
    ui.vote("model_a", "fine", answered(True, MIN_READ_SECONDS + 1))
    ui.vote("model_b", "named", answered(False, MIN_READ_SECONDS + 1))
    votes = store.votes("math")
    assert [v["blind"] for v in votes] == [True, False]
    assert lb.blind_votes(votes) == votes[:1]
    rows, _, heatmap, summary = ui.leaderboard("math")
    assert "1 votes between 2 models" in summary and "1 votes cast with the names shown" in summary
    assert heatmap is not None  # two models met: the pairwise win-rate heatmap is drawn

    # An answer that names its model: kept, flagged, not counted.
    naming = answered(True, MIN_READ_SECONDS + 1)
    naming.pending_vote.answer_a = "As math-qwth, I say 4."
    naming.pending_vote.names_model = lb.answer_names_model(
        naming.pending_vote.answer_a, ["math-qwth", "math-lora"])
    ui.vote("model_a", "", naming)
    votes = store.votes("math")
    assert [v["names_model"] for v in votes] == [False, False, True]
    assert lb.blind_votes(votes) == votes[:1]
    assert "2 votes cast with the names shown, or on answers that named" in ui.leaderboard("math")[3]


def test_votes_and_questions_are_rate_limited_per_client(tmp_path, monkeypatch):
    """QTUNE_UI_VOTES_PER_MINUTE=2: the third vote within a minute from one address is
    refused and not stored; another address still votes. Questions likewise."""
    import time
    from types import SimpleNamespace

    from qtune.ui.limits import RateLimiter
    from qtune.ui.state import MIN_READ_SECONDS, ChatSession

    from qtune.config import settings
    from qtune.errors import QtuneError

    monkeypatch.setenv("QTUNE_UI_VOTES_PER_MINUTE", "2")
    monkeypatch.setenv("QTUNE_UI_MESSAGES_PER_MINUTE", "1")
    store = FeedbackStore(tmp_path / "fb.db")
    ui = QtuneUI(api_base="http://127.0.0.1:9/v1", store=store)

    def request(host: str):
        return SimpleNamespace(client=SimpleNamespace(host=host))

    def answered() -> CompareSession:
        session = CompareSession(conversation_id="c", assistant="math", left="a", right="b")
        session.pending_vote = Vote(conversation_id="c", assistant="math", model_a="a",
                                    model_b="b", winner="tie", prompt="?", answer_a="1",
                                    answer_b="2")
        session.answered_at = time.monotonic() - MIN_READ_SECONDS - 1
        return session

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        messages = [ui.vote("model_a", "", answered(), request("10.0.0.1"))[1]
                    for _ in range(3)]
        assert "Too many votes and ratings" in messages[2]
        assert "Too many" not in ui.vote("model_a", "", answered(), request("10.0.0.2"))[1]
    assert len(store.votes()) == 3

    ui.chat_submit("first question", ChatSession(), "math", request=request("10.0.0.1"))
    with pytest.raises(gr.Error, match="Too many questions"):
        ui.chat_submit("second question", ChatSession(), "math", request=request("10.0.0.1"))

    clock = [0.0]
    limiter = RateLimiter(2, window_s=60, clock=lambda: clock[0])
    assert [limiter.allow("x") for _ in range(3)] == [True, True, False]
    clock[0] = 60.0
    assert limiter.allow("x") and RateLimiter(0).allow("x")

    monkeypatch.setenv("QTUNE_UI_VOTES_PER_MINUTE", "ten")
    with pytest.raises(QtuneError, match="not a whole number"):
        settings()


def test_model_cards_come_from_the_served_snapshot(tmp_path):
    """A served adapter's card is read from the snapshot the server reports as its root,
    which carries the run's metrics beside the weights."""
    import json

    from qtune.serve.adapters import AdapterInfo, stage_snapshot
    from qtune.ui.cards import model_card

    folder = tmp_path / "math-qwth"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"weights v1")
    early = AdapterInfo("math-qwth", folder, 8, ("q_proj",), weights_version(folder))
    assert not (stage_snapshot(early, tmp_path / "served") / "metrics.json").exists()
    (folder / "metrics.json").write_text(json.dumps({
        "task": "math", "steps": 80, "batch_size": 4, "seq_len": 256,
        "trainable_parameters": 44160, "same_rank_lora_parameters": 460800,
        "initial_eval_loss": 1.3997, "final_eval_loss": 1.2151, "eval_split": "dev"}))
    (folder / "training_config.json").write_text(json.dumps({"lr": 0.002, "r": 8}))
    info = AdapterInfo("math-qwth", folder, 8, ("q_proj",), weights_version(folder))
    root = stage_snapshot(info, tmp_path / "served")
    assert {p.name for p in root.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                "metrics.json", "training_config.json"}
    card = model_card(parse_model("math-qwth", "base", str(root)))
    assert "quantum-tuned (QWTH)" in card and info.version in card
    assert "44,160 trainable parameters (9.6% of a rank-8 LoRA" in card
    assert "80 steps × 4 × 256 tokens on `math`, peak lr 0.002" in card
    assert "1.400 → 1.215" in card
    elsewhere = model_card(parse_model("math-qwth", "base", "/not/on/this/machine"))
    assert "No card" in elsewhere
    assert "base model" in model_card(parse_model("smollm2-135m-instruct"))


def test_retry_keeps_the_earlier_answer_as_a_sibling_and_flags_name_a_reason(tmp_path):
    """Store side of Retry and Flag (the endpoint is not needed: answers are stored by the
    same _save_answer the stream uses)."""
    from qtune.ui.state import ChatSession

    store = FeedbackStore(tmp_path / "fb.db")
    ui = QtuneUI(api_base="http://127.0.0.1:9/v1", store=store)
    _, _, session, _ = ui.chat_submit("What is 2 + 2?", ChatSession(), "math")
    session.append("assistant", "5", "math-qwth")
    ui._save_answer(session, 1, "complete")
    first = session.ids[1]
    history, session = ui.chat_retry(session)
    session.append("assistant", "4", "math-qwth")
    ui._save_answer(session, 1, "complete")
    messages = store.conversations()[0]["messages"]
    assert [(m["content"], m["regenerates"]) for m in messages] == [
        ("What is 2 + 2?", None), ("5", None), ("4", first)]
    with pytest.raises(gr.Error, match="Choose why"):
        ui.chat_flag(session, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gr.Info outside a request becomes a warning
        ui.chat_flag(session, "wrong")
    assert [(f["message_id"], f["reason"]) for f in store.flags()] == [(session.ids[1], "wrong")]


def test_an_adapter_with_any_name_is_an_adapter(tmp_path):
    """`math-dora` is served with a parent: the UI labels it an adapter, never "base"."""
    ui = QtuneUI(api_base="http://127.0.0.1:9/v1", store=FeedbackStore(tmp_path / "fb.db"))
    ui.served["my-adapter"] = parse_model("my-adapter", "smollm2-135m-instruct", "/x")
    assert ui.label("my-adapter") == "adapter · my-adapter"
    assert parse_model("my-adapter").label == "base"  # what the name alone would say


def test_ratings_and_flags_wait_for_the_finished_answer(tmp_path):
    """Only an answer this page has shown in full is rated or flagged, once."""
    from types import SimpleNamespace

    from qtune.ui.state import ChatSession

    store = FeedbackStore(tmp_path / "fb.db")
    ui = QtuneUI(api_base="http://127.0.0.1:9/v1", store=store)
    session = ChatSession(conversation_id="c1", assistant="math", owner="user:ann")
    session.append("user", "What is 2 + 2?")
    session.append("assistant", "It is", "math-lora")
    ui.persist_chat(session)
    session.streaming = True  # the answer is still arriving
    like = SimpleNamespace(index=1, liked=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ui.chat_rate(session, like)
    assert store.ratings() == []
    with pytest.raises(gr.Error, match="Wait until the answer is complete"):
        ui.chat_flag(session, "wrong")
    session.streaming = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ui.chat_rate(session, like)
        ui.chat_flag(session, "wrong")
    assert [(r["rating"], r["voter"]) for r in store.ratings()] == [(1, "user:ann")]
    with pytest.raises(gr.Error, match="flagged this answer already"):
        ui.chat_flag(session, "wrong")
    with pytest.raises(gr.Error, match="Choose why"):
        ui.chat_flag(session, "a reason no button offers")


def test_the_ui_learns_assistants_from_the_served_adapters(tmp_path):
    """An adapter's recorded assistant joins the Assistant list with its title, system
    prompt and crisis screen, whatever the adapter's name; its adapters pair in Compare."""
    import json

    ui = QtuneUI(api_base="http://127.0.0.1:9/v1", store=FeedbackStore(tmp_path / "fb.db"))
    assert [name for _, name in ui.assistant_choices()] == ["math", "counselling"]
    assert ui.crisis_screened("counselling") and not ui.crisis_screened("math")
    record = {"name": "helpline", "title": "Helpline", "system_prompt": "Listen first.",
              "crisis_screen": True}
    for name, method in (("quantum-one", "qwth"), ("classic-one", "lora")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"assistant": record}))
        (tmp_path / name / "training_config.json").write_text(json.dumps({"method": method}))
    served = [ui._with_assistant(parse_model("quantum-one", "base", str(tmp_path / "quantum-one"))),
              ui._with_assistant(parse_model("classic-one", "base", str(tmp_path / "classic-one"))),
              ui._with_assistant(parse_model("math-lora", "base", "/not/here")),
              parse_model("smollm2-135m-instruct")]
    assert [m.assistant for m in served] == ["helpline", "helpline", "math", None]
    assert ui.assistant_choices()[-1] == ("Helpline · helpline", "helpline")
    assert ui.system_prompt_of("helpline") == "Listen first." and ui.crisis_screened("helpline")
    assert default_pair(served, "helpline") == ("quantum-one", "classic-one")  # QWTH vs LoRA
    assert served[0].label == "quantum-tuned (QWTH)"
    assert ui.assistant_list("gone")["value"] == "math"


def test_a_preference_tuned_version_is_labelled_and_listed_after_its_adapters():
    models = [parse_model(name, "base") for name in
              ("counselling-qwth-dpo", "counselling-lora", "counselling-qwth")]
    models.append(parse_model("smollm2-135m-instruct"))
    assert models[0].label == "quantum-tuned (QWTH) + DPO"
    assert (models[0].assistant, models[0].method) == ("counselling", "qwth")
    assert default_pair(models, "counselling") == ("counselling-qwth", "counselling-lora")
    assert [m.name for m in sort_models(models)] == [
        "counselling-qwth", "counselling-lora", "counselling-qwth-dpo", "smollm2-135m-instruct"]
