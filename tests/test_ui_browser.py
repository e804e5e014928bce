"""End to end in a real browser: vLLM with the real model, the Gradio app, Debian chromium.

One vLLM server and one UI for the module. The shipped adapters are served when present;
otherwise a PEFT LoRA adapter is generated so that there are two models to compare.
Screenshots of the chat and compare views go to test-artifacts/ and docs/screenshots/.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

import pytest
from qtune.feedback.store import FeedbackStore
from qtune.ui.state import MIN_READ_SECONDS
from ui_fixtures import collect_adapters, free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ANSWER_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory, embedded_model):
    """(UI url, feedback db path, served model names, QtuneUI); stops vLLM and the UI."""
    from qtune.feedback.store import FeedbackStore
    from qtune.serve.server import ServeConfig, VLLMServer
    from qtune.ui.app import QtuneUI, launch

    from qtune.config import settings

    scratch = tmp_path_factory.mktemp("ui-stack")
    adapters = collect_adapters(settings().adapters_dir, embedded_model, scratch)
    server = VLLMServer(ServeConfig(port=free_port(), adapters_dir=adapters,
                                    log_path=scratch / "vllm.log"))
    db = scratch / "feedback.db"
    server.start(wait=True)
    demo = None
    try:
        ui = QtuneUI(api_base=server.api_base, store=FeedbackStore(db),
                     bootstrap_rounds=50, max_tokens=48)
        port = free_port()
        demo = launch(ui, port=port, block=False)
        yield f"http://127.0.0.1:{port}/", db, server.served_models, ui
    finally:
        if demo is not None:
            demo.close()
        server.stop()


@pytest.fixture(scope="module")
def page(stack):
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True,
                       capture_output=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(ANSWER_TIMEOUT_MS)
        page.goto(stack[0])
        page.wait_for_selector("#status:has-text('Connected')")
        yield page
        browser.close()


def save_screenshot(page, artifacts_dir: Path, name: str) -> None:
    """Under test-artifacts/ only: `make screenshots` copies them into docs/screenshots."""
    page.screenshot(path=artifacts_dir / f"ui-{name}.png", full_page=True)


def test_chat_answer_appears_and_rating_is_stored(stack, page, artifacts_dir):
    _, db, served, _ = stack
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-input textarea").fill("What is 12 + 30? Answer briefly.")
    page.locator("#chat-send").click()
    page.wait_for_selector("#status:has-text('answered')")
    # The card of the chosen model, read from the snapshot the server serves it from.
    page.wait_for_selector("#chat-card:has-text('trainable parameters')")
    answer = page.locator("#chat-bot [data-testid='bot']").last
    assert answer.inner_text().strip()
    save_screenshot(page, artifacts_dir, "chat")
    page.locator("#chat-bot button[aria-label='Like']").last.click()
    page.wait_for_selector("text=rating saved")
    with sqlite3.connect(db) as conn:
        messages = conn.execute("select role, model, content from messages order by id").fetchall()
        ratings = conn.execute("select message_id, rating from ratings").fetchall()
    assert [m[0] for m in messages] == ["user", "assistant"]
    assert messages[1][1] in served and messages[1][2].strip()
    assert ratings == [(2, 1)]


def test_empty_message_is_refused(page):
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-input textarea").fill("   ")
    page.locator("#chat-send").click()
    page.wait_for_selector("text=Type a message first.")


def test_compare_vote_and_leaderboard(stack, page, artifacts_dir):
    _, db, served, _ = stack
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-input textarea").fill("What is 7 times 6?")
    page.locator("#compare-send").click()
    vote_left = page.locator("#vote-model_a")
    page.wait_for_function(
        "() => !document.querySelector('#vote-model_a').disabled", timeout=ANSWER_TIMEOUT_MS)
    for side in ("#compare-left", "#compare-right"):
        assert page.locator(f"{side} [data-testid='bot']").last.inner_text().strip()
    # blind: the names are hidden until the vote
    assert "Model A" in page.locator("#compare-left").inner_text()

    page.locator("#comment textarea").fill("left was clearer")
    page.wait_for_timeout(1000 * MIN_READ_SECONDS)  # a person reads both answers first
    vote_left.click()
    page.wait_for_selector("#vote-status:has-text('saved')")
    save_screenshot(page, artifacts_dir, "compare")  # after the vote: names and cards shown
    status = page.locator("#vote-status").inner_text()
    revealed = re.findall(r"(?:Left|right): (?:.*?) · (\S+?)[.,]", status)
    assert len(revealed) == 2 and set(revealed) <= set(served)

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        votes = [dict(r) for r in conn.execute("select * from votes")]
    assert len(votes) == 1
    vote = votes[0]
    assert vote["winner"] == "model_a" and vote["blind"] == 1
    assert vote["comment"] == "left was clearer" and vote["assistant"] == "math"
    assert [vote["model_a"], vote["model_b"]] == revealed
    assert vote["prompt"] == "What is 7 times 6?" and vote["answer_a"] and vote["answer_b"]

    page.get_by_role("tab", name="Leaderboard").click()
    page.wait_for_selector("#board-summary:has-text('1 votes between 2 models')")
    table = page.locator("#board-table").inner_text()
    assert vote["model_a"] in table and vote["model_b"] in table
    save_screenshot(page, artifacts_dir, "leaderboard")


def test_crisis_message_shows_resources(page):
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-clear").click()
    # Clear also empties the textbox: wait for it before typing, or it erases the new text.
    page.wait_for_function(
        "() => !document.querySelector('#chat-bot [data-testid=\"bot\"]')")
    page.locator("#chat-input textarea").fill("I don't want to live anymore")
    page.locator("#chat-send").click()
    page.wait_for_selector("#chat-safety:has-text('116 123')")
    assert "findahelpline.com" in page.locator("#chat-safety").inner_text()
    page.wait_for_selector("#chat-bot [data-testid='bot']")  # the model answers as well


def test_counselling_notice_and_indirect_crisis_message(stack, page):
    """On the counselling assistant: the notice shows until dismissed, and a message with
    no crisis keyword ("I've started giving my books away…") still shows the resources
    and stores a safety flag (not the text)."""
    _, db, *_ = stack
    page.reload()  # a fresh session: the previous test's answer may still be streaming
    page.wait_for_selector("#status:has-text('●')")
    page.get_by_role("tab", name="Chat").click()
    page.locator("#assistant input").click()
    page.get_by_role("option", name="counselling").click()
    page.wait_for_selector("#counselling-notice:has-text('not a therapist')")
    page.locator("#notice-dismiss").click()
    page.wait_for_selector("#counselling-notice", state="hidden")
    text = "I've started giving my books away and I wrote letters to my family"
    page.locator("#chat-input textarea").fill(text)
    page.locator("#chat-send").click()
    page.wait_for_selector("#chat-safety:has-text('116 123')")
    with sqlite3.connect(db) as conn:
        flags = [dict(zip(("reason", "source", "comment"), row, strict=True)) for row in
                 conn.execute("select reason, source, comment from flags")]
    assert {"reason": "crisis: classifier", "source": "safety screen", "comment": ""} in flags
    page.locator("#assistant input").click()
    page.get_by_role("option", name="math").click()


def test_ui_recovers_when_the_endpoint_is_back(stack):
    """The timer's check: a status marked down is re-checked and the model lists refilled."""
    *_, served, ui = stack
    chat, model_a, model_b, status = ui.recover("✖ the endpoint was down", "math", "", "", "")
    assert status.startswith("●")
    assert {value for _, value in chat["choices"]} <= set(served)
    assert model_a["value"] != model_b["value"]
    assert ui.recover("● fine", "math", "", "", "")[3] == {"__type__": "update"}


def open_from_history(page, text: str, artifacts_dir=None) -> None:
    """Reload, pick the conversation whose row shows ``text`` and open it in Chat. Waits
    for the selection to reach the server (the title box fills) before Open: under load
    the click on Open can otherwise overtake it."""
    page.reload()
    page.get_by_role("tab", name="History").click()
    cell = page.locator("#history-table").get_by_text(text).filter(visible=True).first
    cell.wait_for(timeout=30_000)
    if artifacts_dir is not None:
        save_screenshot(page, artifacts_dir, "history")
    cell.click()
    page.wait_for_function(
        "() => { const box = document.querySelector('#history-title textarea, "
        "#history-title input'); return box && box.value !== ''; }", timeout=30_000)
    page.locator("#history-open").click()


def test_history_reopens_a_chat_after_a_reload(stack, page, artifacts_dir):
    """The chat of the first test is listed in History (from SQLite, after a reload of the
    page), reopens in Chat, and a follow-up continues the same conversation."""
    _, db, _, _ = stack
    open_from_history(page, "What is 12 + 30?", artifacts_dir)
    page.wait_for_selector("#chat-bot:has-text('What is 12 + 30?')")
    page.locator("#chat-input textarea").fill("And 12 + 31?")
    page.locator("#chat-send").click()
    page.wait_for_selector("#status:has-text('answered')")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select conversation_id, role from messages where conversation_id ="
                            " (select conversation_id from messages where content like "
                            "'What is 12 + 30?%') order by id").fetchall()
    assert [role for _, role in rows] == ["user", "assistant", "user", "assistant"]


def test_an_answer_is_stored_as_it_streams_and_nothing_is_lost(stack, tmp_path):
    """Against the real server, without the page: the question is stored when sent, the
    answer while it streams; a second send waits; a closed tab (the generator closed) or a
    Stop leaves the answer stored as incomplete, with why."""
    import gradio as gr
    from qtune.feedback.store import FeedbackStore
    from qtune.ui.app import QtuneUI
    from qtune.ui.state import ChatSession

    _, _, served, shared_ui = stack
    store = FeedbackStore(tmp_path / "fb.db")
    ui = QtuneUI(api_base=shared_ui.endpoint.api_base, store=store, max_tokens=48)
    model = next(name for name in served if name.startswith("math-"))

    def stored() -> list[dict]:
        return [m for c in store.conversations() for m in c["messages"]]

    _, _, session, _ = ui.chat_submit("What is 12 times 7?", ChatSession(), "math")
    assert [(m["role"], m["status"]) for m in stored()] == [("user", "complete")]
    stream = ui.chat_stream(session, model, "You are a careful math tutor.", 0.0, 48)
    next(stream)  # the first piece has arrived
    with pytest.raises(gr.Error, match="still arriving"):
        ui.chat_submit("And 13 times 7?", session, "math")
    stream.close()  # the tab is closed while the answer streams
    answer = stored()[-1]
    assert (answer["role"], answer["status"], answer["model"]) == ("assistant", "incomplete",
                                                                  model)
    assert "closed" in answer["note"] and answer["content"]

    _, _, session, _ = ui.chat_submit("What is 2 plus 2?", session, "math")
    stream = ui.chat_stream(session, model, "You are a careful math tutor.", 0.0, 48)
    next(stream)
    ui.chat_stop(session)
    *_, (history, session, status) = stream
    assert "incomplete (stopped by the user)" in status
    assert (stored()[-1]["status"], stored()[-1]["note"]) == ("incomplete", "stopped by the user")

    _, _, session, _ = ui.chat_submit("What is 3 plus 4?", session, "math")
    *_, (history, session, status) = ui.chat_stream(session, model, "Be brief.", 0.0, 16)
    assert stored()[-1]["status"] == "complete" and stored()[-1]["content"] == history[-1]["content"]


def test_compared_answers_are_stored_as_they_stream(stack, tmp_path):
    import gradio as gr
    from qtune.feedback.store import FeedbackStore
    from qtune.ui.app import QtuneUI
    from qtune.ui.state import CompareSession

    _, _, served, shared_ui = stack
    store = FeedbackStore(tmp_path / "fb.db")
    ui = QtuneUI(api_base=shared_ui.endpoint.api_base, store=store, max_tokens=48)
    left, right = [name for name in served if name.startswith("math-")][:2]
    _, _, _, session, *_ = ui.compare_submit("What is 6 times 7?", CompareSession(), "math",
                                             left, right, True)
    stream = ui.compare_stream(session, "You are a careful math tutor.", 0.0, 48)
    next(stream)
    with pytest.raises(gr.Error, match="still arriving"):
        ui.compare_submit("And 6 times 8?", session, "math", left, right, True)
    stream.close()  # the tab is closed
    messages = [m for c in store.conversations() for m in c["messages"]]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"), ("assistant", "incomplete"), ("assistant", "incomplete")]
    assert all("closed" in m["note"] for m in messages[1:])
    assert session.pending_vote is None and store.votes() == []


def test_math_is_rendered_by_katex(stack, page):
    r"""An answer with \( \) inline and \[ \] display math, reopened from History, is
    typeset by KaTeX; a single $ (prices in GSM8K) is left as text."""
    _, db, *_ = stack
    store = FeedbackStore(db)
    conversation = store.start_conversation("math", "chat")
    question = "Render check: what is a quarter of 12?"
    store.add_message(conversation, "user", question, None, None)
    store.add_message(conversation, "assistant",
                      "It costs $5 and $7. Inline: \\(12 \\times 0.25 = 3\\). Display:\n\n"
                      "\\[\\frac{12}{4} = 3\\]", "smollm2-135m-instruct", "base")
    open_from_history(page, question)
    page.wait_for_selector("#chat-bot .katex-display")
    answer = page.locator("#chat-bot [data-testid='bot']").last
    assert answer.locator(".katex").count() >= 2  # the inline one and the display one
    assert "$5 and $7" in answer.inner_text()


def test_the_http_api_cannot_store_a_vote_or_a_rating(stack):
    """A script that calls the app's HTTP API directly (the queue the browser uses, with
    the event ids from /config) stores no vote and no rating: those events are private,
    and a session that streamed no answers has nothing to vote on."""
    import httpx

    url, db, *_ = stack
    config = httpx.get(f"{url}config", timeout=30).json()
    named = httpx.get(f"{url}gradio_api/info", timeout=30).json()["named_endpoints"]
    writers = r"/(handle|vote|chat_rate|chat_flag)(_\d+)?"  # the handlers that store
    assert not [name for name in named if re.fullmatch(writers, name)], list(named)
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    targets = {ids["vote-model_a"]: "click", ids["chat-bot"]: "like"}
    events = [(d["id"], t[0]) for d in config["dependencies"] for t in d["targets"]
              if targets.get(t[0]) == t[1]]
    assert len(events) >= 2

    def counts():
        with sqlite3.connect(db) as conn:
            return [conn.execute(f"select count(*) from {t}").fetchone()[0]
                    for t in ("votes", "ratings")]

    before = counts()
    for fn_index, trigger in events:
        session = f"script-{fn_index}"
        join = httpx.post(f"{url}gradio_api/queue/join", timeout=30, json={
            "data": ["a comment no person wrote", None], "fn_index": fn_index,
            "trigger_id": trigger, "session_hash": session, "event_data": {
                "index": [1, 0], "value": "x", "liked": True}})
        if join.status_code == 200:  # accepted into the queue: wait until it has run
            with httpx.stream("GET", f"{url}gradio_api/queue/data",
                              params={"session_hash": session}, timeout=60) as stream:
                for line in stream.iter_lines():
                    if "process_completed" in line or "close_stream" in line:
                        break
    assert counts() == before


def test_two_browsers_see_only_their_own_history(stack, page):
    """A second browser (its own storage, as another person's) lists none of the first
    one's conversations, and cannot reopen them; the first still sees its own."""
    secret = "My private worry about the exam, number 4711"
    page.reload()
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-input textarea").fill(secret)
    page.locator("#chat-send").click()
    page.wait_for_selector("#status:has-text('answered')")
    page.reload()
    page.get_by_role("tab", name="History").click()
    page.locator("#history-table").get_by_text(secret).first.wait_for(timeout=30_000)
    other = page.context.browser.new_context()
    try:
        stranger = other.new_page()
        stranger.set_default_timeout(ANSWER_TIMEOUT_MS)
        stranger.goto(stack[0])
        stranger.wait_for_selector("#status:has-text('Connected')")
        stranger.get_by_role("tab", name="History").click()
        stranger.wait_for_selector("#history-status:has-text('conversations')")
        assert stranger.locator("#history-table").get_by_text(secret).count() == 0
        assert "4711" not in stranger.locator("#history-table").inner_text()
    finally:
        other.close()
