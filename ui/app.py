"""The qtune web UI (Gradio): chat, side-by-side comparison with votes, and a leaderboard.

It talks to any OpenAI-compatible endpoint (vLLM's by default) and lists the models from
``/v1/models``; feedback goes to the SQLite store in :mod:`qtune.feedback.store`.

* **Chat**: one assistant, one model, streamed; stop / retry / undo / clear; thumbs up or
  down on each answer (stored as a rating).
* **Compare**: one prompt to two models streaming at the same time (two threads feeding one
  queue); blind by default ("Model A" / "Model B" on random sides, names revealed after the
  vote); Chatbot Arena's four outcomes; follow-up turns continue both conversations.
* **Leaderboard**: Bradley–Terry ratings with bootstrap intervals per assistant.

Crisis phrasings in a user message show crisis resources beside the answer, whatever the
model says (:mod:`qtune.ui.safety`). Errors (endpoint down, database locked) are shown to
the user and never swallowed: an unsaved vote stays on screen and can be sent again.
"""

from __future__ import annotations

import logging
import threading

import gradio as gr
from qtune.ui.chat import ChatHandlers, chat_tab
from qtune.ui.compare import VOTE_BUTTONS, CompareHandlers, compare_tab
from qtune.ui.history import HistoryHandlers, history_tab
from qtune.ui.leaderboard import LeaderboardHandlers, leaderboard_tab
from qtune.ui.login import ClientAddress, login_function, single_account, trust_proxies
from qtune.ui.safety import COUNSELLING_NOTICE, warm_up
from qtune.ui.state import DEFAULT_TEMPERATURE, LOCAL_OWNER, RECOVERY_POLL_S
from starlette.middleware import Middleware

from qtune.config import settings

log = logging.getLogger(__name__)


class QtuneUI(ChatHandlers, CompareHandlers, LeaderboardHandlers, HistoryHandlers):
    """Holds the endpoint and the store; its methods are the Gradio event handlers of every
    view (one mixin per tab, sharing UIState)."""


def build_app(ui: QtuneUI, default_assistant: str | None = None) -> gr.Blocks:
    """The Gradio Blocks of the whole UI."""
    ui.learn_assistants()  # an assistant of your own, recorded by a served adapter
    assistant_value = default_assistant or next(iter(ui.assistants))
    with gr.Blocks(title="qtune", analytics_enabled=False) as demo:
        gr.Markdown("## qtune · quantum-tuned assistants\nChat with the served models, compare "
                    "two side by side and vote; the leaderboard ranks them.")
        with gr.Row(equal_height=True):
            assistant = gr.Dropdown(ui.assistant_choices(), value=assistant_value,
                                    label="Assistant",
                                    scale=1, elem_id="assistant")
            status = gr.Markdown("Connecting…", elem_id="status")
            refresh = gr.Button("Refresh models", scale=0, elem_id="refresh")
        with gr.Group(visible=ui.crisis_screened(assistant_value),
                      elem_id="counselling-notice") as notice:
            gr.Markdown(COUNSELLING_NOTICE)
            notice_dismiss = gr.Button("I understand", size="sm", elem_id="notice-dismiss")
        notice_seen = gr.State(False)
        # Whose page this is: the account, else this browser (its own id in local storage).
        browser_id = gr.BrowserState("", storage_key="qtune-browser")
        owner = gr.State(LOCAL_OWNER)
        with gr.Accordion("Generation settings", open=False):
            system_prompt = gr.Textbox(ui.system_prompt_of(assistant_value), lines=4,
                                       label="System prompt (editable; changes apply to the "
                                             "next answer)")
            with gr.Row():
                temperature = gr.Slider(0.0, 1.5, DEFAULT_TEMPERATURE, step=0.05,
                                        label="Temperature", elem_id="temperature")
                max_tokens = gr.Slider(16, 1024, ui.max_tokens, step=16,
                                       label="Max new tokens", elem_id="max-tokens")
        with gr.Tabs() as tabs:
            with gr.Tab("Chat", id="chat"):
                chat_parts = chat_tab(ui)
            with gr.Tab("Compare", id="compare"):
                compare_parts = compare_tab(ui)
            with gr.Tab("Leaderboard", id="leaderboard") as board_tab:
                board_parts = leaderboard_tab()
            with gr.Tab("History", id="history") as history_tab_:
                history_parts = history_tab()
        _wire(ui, demo, locals())
        _wire_history(ui, demo, locals())
        _wire_notice(ui, locals())
    return demo


def _wire_notice(ui: QtuneUI, parts: dict) -> None:
    """The counselling notice: shown on first use of that assistant until dismissed."""
    notice, seen = parts["notice"], parts["notice_seen"]
    parts["assistant"].change(
        lambda assistant, dismissed: gr.update(
            visible=ui.crisis_screened(assistant) and not dismissed),
        [parts["assistant"], seen], notice)
    parts["notice_dismiss"].click(lambda: (gr.update(visible=False), True), None,
                                  [notice, seen])


def _model_lists(parts: dict) -> tuple[list, list]:
    """(inputs, outputs) of ui.refresh: the assistant and the three model pickers."""
    chat, cmp = parts["chat_parts"], parts["compare_parts"]
    pickers = [chat["model"], cmp["model_a"], cmp["model_b"]]
    return [parts["assistant"], *pickers], [*pickers, parts["status"]]


def _wire(ui: QtuneUI, demo: gr.Blocks, parts: dict) -> None:
    """Connect the events (kept apart from the layout to keep both readable)."""
    chat, cmp, board = parts["chat_parts"], parts["compare_parts"], parts["board_parts"]
    assistant, status = parts["assistant"], parts["status"]
    system_prompt, temperature = parts["system_prompt"], parts["temperature"]
    max_tokens = parts["max_tokens"]
    refresh_inputs, model_outputs = _model_lists(parts)
    chat_clear_outputs = [chat["chatbot"], chat["session"], chat["safety"], chat["text"]]
    compare_clear_outputs = [cmp["left"], cmp["right"], cmp["session"], cmp["safety"],
                             *cmp["votes"], cmp["vote_status"]]
    board_outputs = [board["table"], board["plot"], board["heatmap"], board["summary"]]

    owner = parts["owner"]
    demo.load(ui.refresh, refresh_inputs, model_outputs).then(
        ui.assistant_list, assistant, assistant)
    gr.Timer(RECOVERY_POLL_S).tick(ui.recover, [status, *refresh_inputs], model_outputs,
                                   show_progress="hidden", queue=False)
    parts["refresh"].click(ui.refresh, refresh_inputs, model_outputs).then(
        ui.assistant_list, assistant, assistant)
    # .input: only a person's choice clears the chats (History sets the value to reopen one)
    assistant.input(
        ui.change_assistant, assistant,
        [system_prompt, *model_outputs, *chat_clear_outputs, *compare_clear_outputs],
    ).then(ui.leaderboard, [assistant, owner], board_outputs)

    # Chat: validate and show the question, then stream the answer.
    stream_args = ([chat["session"], chat["model"], system_prompt, temperature, max_tokens],
                   [chat["chatbot"], chat["session"], status])
    submit_outputs = [chat["text"], chat["chatbot"], chat["session"], chat["safety"]]
    streams = []
    for trigger in (chat["text"].submit, chat["send"].click):
        streams.append(
            trigger(ui.chat_submit, [chat["text"], chat["session"], assistant, owner],
                    submit_outputs)
            .success(ui.chat_stream, *stream_args)
        )
    streams.append(
        chat["retry"].click(ui.chat_retry, chat["session"], [chat["chatbot"], chat["session"]])
        .success(ui.chat_stream, *stream_args)
    )
    chat["stop"].click(ui.chat_stop, chat["session"], chat["session"], cancels=streams)
    chat["undo"].click(ui.chat_undo, chat["session"],
                       [chat["chatbot"], chat["session"], chat["text"], chat["safety"]])
    chat["clear"].click(ui.clear_chat, None, chat_clear_outputs)
    chat["chatbot"].clear(ui.clear_chat, None, chat_clear_outputs)  # the chatbot's own bin
    # What writes feedback is not offered as an API endpoint (only people in the page vote).
    chat["model"].change(ui.card_for, chat["model"], chat["card"])
    chat["flag"].click(ui.chat_flag, [chat["session"], chat["flag_reason"]], None,
                       api_visibility="private")
    chat["chatbot"].like(ui.chat_rate, chat["session"], None, api_visibility="private")

    # Compare: both streams at once; votes enabled when both answers are complete.
    compare_submit_outputs = [cmp["text"], cmp["left"], cmp["right"], cmp["session"],
                              cmp["safety"], *cmp["votes"], cmp["vote_status"]]
    compare_streams = []
    for trigger in (cmp["text"].submit, cmp["send"].click):
        compare_streams.append(
            trigger(ui.compare_submit,
                    [cmp["text"], cmp["session"], assistant, cmp["model_a"], cmp["model_b"],
                     cmp["blind"], owner],
                    compare_submit_outputs)
            .success(ui.compare_stream,
                     [cmp["session"], system_prompt, temperature, max_tokens],
                     [cmp["left"], cmp["right"], cmp["session"], cmp["vote_status"]])
            .success(ui.vote_buttons_for, cmp["session"], cmp["votes"])
        )
    cmp["stop"].click(ui.compare_stop, cmp["session"], cmp["session"], cancels=compare_streams)
    cmp["clear"].click(ui.clear_compare, None, compare_clear_outputs)
    for side in (cmp["left"], cmp["right"]):
        side.clear(ui.clear_compare, None, compare_clear_outputs)
    for button, (_, key) in zip(cmp["votes"], VOTE_BUTTONS, strict=True):
        button.click(
            ui.voter(key),
            [cmp["comment"], cmp["session"]],
            [cmp["session"], cmp["vote_status"], *cmp["votes"], cmp["left"], cmp["right"],
             cmp["comment"]],
            api_visibility="private",
        ).then(ui.leaderboard, [assistant, owner], board_outputs)

    parts["board_tab"].select(ui.leaderboard, [assistant, owner], board_outputs)
    board["refresh"].click(ui.leaderboard, [assistant, owner], board_outputs)


def _wire_history(ui: QtuneUI, demo: gr.Blocks, parts: dict) -> None:
    """The History tab: list, select, reopen in Chat, rename, delete, export."""
    history, chat = parts["history_parts"], parts["chat_parts"]
    listing = [history["table"], history["ids"], history["status"]]
    owner, board = parts["owner"], parts["board_parts"]
    # Who this page belongs to comes first; what it shows of the store follows from it.
    demo.load(ui.identify, parts["browser_id"], [parts["browser_id"], owner]).then(
        ui.history_list, owner, listing).then(
        ui.leaderboard, [parts["assistant"], owner],
        [board["table"], board["plot"], board["heatmap"], board["summary"]])
    parts["history_tab_"].select(ui.history_list, owner, listing)
    history["refresh"].click(ui.history_list, owner, listing)
    history["table"].select(ui.history_select, history["ids"],
                            [history["selected"], history["title"]])
    history["open"].click(
        ui.history_open, [history["selected"], owner],
        [chat["chatbot"], chat["session"], parts["assistant"], parts["tabs"],
         history["status"]],
    ).success(
        ui.system_prompt_of, parts["assistant"],
        parts["system_prompt"],
    ).then(ui.refresh, *_model_lists(parts))
    history["new"].click(ui.clear_chat, None, [chat["chatbot"], chat["session"], chat["safety"],
                                              chat["text"]]
                         ).then(lambda: gr.Tabs(selected="chat"), None, parts["tabs"])
    history["rename"].click(ui.history_rename, [history["selected"], history["title"], owner],
                            listing)
    history["delete"].click(ui.history_delete, [history["selected"], owner],
                            [*listing, history["selected"], history["title"]])
    history["export_json"].click(lambda cid, who: ui.history_export(cid, "json", who),
                                 [history["selected"], owner], history["download"])
    history["export_md"].click(lambda cid, who: ui.history_export(cid, "markdown", who),
                               [history["selected"], owner], history["download"])


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``user:password`` for Gradio's login page."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        from qtune.errors import QtuneError

        raise QtuneError("--auth must look like USER:PASSWORD (both non-empty)")
    return user, password


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def launch(
    ui: QtuneUI,
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: tuple[str, str] | None = None,
    block: bool = True,
    trusted_proxies: list[str] | None = None,
) -> gr.Blocks:
    """Build and start the app; with ``block=False`` return at once (tests, ``qtune up``).

    People log in when ``auth`` (one USER:PASSWORD, an admin) is given or accounts exist
    (``qtune users``); each then sees only their own History."""
    check = _login_check(ui, auth)
    if not is_loopback(host) and check is None:
        log.warning(
            "the UI listens on %s without a login: anyone who can reach this address can use "
            "the models and vote. Add accounts (`qtune users add`) or pass --auth.", host)
    trust_proxies(trusted_proxies or [])
    demo = build_app(ui)
    # The crisis classifier's encoder takes seconds to load: not on someone's first message.
    threading.Thread(target=warm_up, name="safety-warm-up", daemon=True).start()
    demo.queue(default_concurrency_limit=8)
    demo.launch(
        server_name=host, server_port=port or settings().ui_port,
        auth=login_function(check) if check else None,
        app_kwargs={"middleware": [Middleware(ClientAddress)]},
        prevent_thread_lock=not block, share=False, inbrowser=False, quiet=not block,
        show_error=True, footer_links=[], ssr_mode=False,
    )
    return demo


def _login_check(ui: QtuneUI, auth: tuple[str, str] | None):
    """The password check of the login page (None: no login): the accounts in the store,
    and the ``--auth`` pair as one more admin."""
    has_accounts = ui.accounts.exist()
    if auth is None and not has_accounts:
        return None
    ui.login_required = True
    single = single_account(*auth) if auth else None
    if auth:
        ui.admin_names.add(auth[0])

    def check(name: str, password: str) -> bool:
        if single is not None and name == auth[0]:
            return single(name, password)
        return has_accounts and ui.accounts.check(name, password)

    return check
