"""The qtune web UI (Gradio): chat, side-by-side comparison with votes, and a leaderboard.

It talks to any OpenAI-compatible endpoint (vLLM's by default) and lists the models from
``/v1/models``; feedback goes to the SQLite store in :mod:`qtune.data.feedback`.

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
import queue
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from qtune.data.feedback import FeedbackStore, FeedbackWriteError, Vote, new_conversation_id
from qtune.data.prompts import ASSISTANTS, SYSTEM_PROMPTS
from qtune.ui import leaderboard as lb
from qtune.ui.endpoint import (
    Endpoint,
    EndpointError,
    ServedModel,
    adapter_version,
    default_pair,
    parse_model,
)
from qtune.ui.safety import CRISIS_RESOURCES, is_crisis

from qtune.config import settings

log = logging.getLogger(__name__)

MAX_INPUT_CHARS = 4000
#: Seconds between checks of an endpoint that is down.
RECOVERY_POLL_S = 10.0
#: Status line prefixes (plain symbols: they render without an emoji font).
UP, DOWN = "●", "✖"
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.7
VOTE_BUTTONS = (
    ("← Left is better", "model_a"),
    ("→ Right is better", "model_b"),
    ("Tie", "tie"),
    ("Both are bad", "tie (bothbad)"),
)


@dataclass
class ChatSession:
    """One browser tab's chat: plain messages, and the database id of each once stored."""

    conversation_id: str = ""
    assistant: str = ""
    history: list[dict] = field(default_factory=list)
    models: list[str | None] = field(default_factory=list)
    ids: list[int | None] = field(default_factory=list)
    stored_conversation: bool = False
    stop_requested: bool = False

    def append(self, role: str, content: str, model: str | None = None) -> None:
        self.history.append({"role": role, "content": content})
        self.models.append(model)
        self.ids.append(None)

    def pop(self) -> dict:
        self.models.pop()
        self.ids.pop()
        return self.history.pop()


@dataclass
class CompareSession:
    """One comparison: the two sides' conversations and the vote waiting to be stored."""

    conversation_id: str = ""
    assistant: str = ""
    left: str = ""
    right: str = ""
    blind: bool = True
    revealed: bool = False
    left_history: list[dict] = field(default_factory=list)
    right_history: list[dict] = field(default_factory=list)
    stored_conversation: bool = False
    pending_vote: Vote | None = None
    stop_requested: bool = False


class QtuneUI:
    """Holds the endpoint and the store; its methods are the Gradio event handlers."""

    def __init__(
        self,
        api_base: str | None = None,
        api_key: str | None = None,
        store: FeedbackStore | None = None,
        adapters_dir: Path | None = None,
        bootstrap_rounds: int = 200,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        config = settings()
        self.endpoint = Endpoint(api_base or config.api_base, api_key or config.api_key)
        self.store = store or FeedbackStore()
        self.adapters_dir = adapters_dir or config.adapters_dir
        self.bootstrap_rounds = bootstrap_rounds
        self.max_tokens = max_tokens  # the slider's starting value

    # --- models and status ---------------------------------------------------------------

    def connected_text(self, models: list[ServedModel]) -> str:
        return f"{UP} Connected to `{self.endpoint.api_base}` · {len(models)} models served"

    def _models(self) -> tuple[list[ServedModel] | None, str]:
        try:
            models = self.endpoint.models()
        except EndpointError as error:
            return None, f"{DOWN} {error}"
        return models, self.connected_text(models)

    def refresh(self, assistant: str, chat_model: str, model_a: str, model_b: str):
        """Re-read /v1/models; keep the user's choices when they are still served."""
        models, status = self._models()
        if models is None:
            gr.Warning(status.removeprefix(f"{DOWN} "))
            return gr.update(), gr.update(), gr.update(), status
        usable = [m for m in models if m.serves(assistant)]
        choices = [m.choice for m in usable]
        names = [m.name for m in usable]
        pair = (default_pair(models, assistant) or (names[0], names[0])) if names else None
        chat_value = chat_model if chat_model in names else (pair[0] if pair else None)
        a_value = model_a if model_a in names else (pair[0] if pair else None)
        b_value = model_b if model_b in names else (pair[1] if pair else None)
        if not names:
            status += f" · none of them serves the {assistant} assistant"
        return (
            gr.update(choices=choices, value=chat_value),
            gr.update(choices=choices, value=a_value),
            gr.update(choices=choices, value=b_value),
            status,
        )

    def recover(self, status: str, assistant: str, chat_model: str, model_a: str, model_b: str):
        """Timer tick: while the endpoint is marked down, look again quietly; once it
        answers, fill the model lists so the UI recovers without a page reload."""
        unchanged = (gr.update(), gr.update(), gr.update(), gr.update())
        if not (status or "").startswith(DOWN):
            return unchanged
        models, _ = self._models()
        if models is None:
            return unchanged
        return self.refresh(assistant, chat_model, model_a, model_b)

    def change_assistant(self, assistant: str):
        """A new assistant: its system prompt, its models, and fresh conversations."""
        chat, model_a, model_b, status = self.refresh(assistant, "", "", "")
        return (SYSTEM_PROMPTS.get(assistant, ""), chat, model_a, model_b, status,
                *self.clear_chat(), *self.clear_compare())

    def label(self, name: str) -> str:
        return f"{parse_model(name).label} · {name}"

    # --- input checks --------------------------------------------------------------------

    @staticmethod
    def check_input(text: str) -> str:
        text = (text or "").strip()
        if not text:
            raise gr.Error("Type a message first.", title="Empty message")
        if len(text) > MAX_INPUT_CHARS:
            raise gr.Error(
                f"Your message has {len(text):,} characters; the limit is {MAX_INPUT_CHARS:,}. "
                "Shorten it (the model's context is 2,048 tokens).",
                title="Message too long",
            )
        return text

    @staticmethod
    def safety_update(session_texts: list[str]):
        flagged = any(is_crisis(text) for text in session_texts)
        return gr.update(visible=flagged)

    # --- chat ----------------------------------------------------------------------------

    def clear_chat(self):
        return [], ChatSession(), gr.update(visible=False), ""

    def chat_submit(self, text: str, session: ChatSession, assistant: str):
        text = self.check_input(text)
        if not session.conversation_id or session.assistant != assistant:
            session = ChatSession(conversation_id=new_conversation_id(), assistant=assistant)
        session.append("user", text)
        return "", session.history, session, self._chat_safety(session)

    def _chat_safety(self, session: ChatSession):
        return self.safety_update([m["content"] for m in session.history if m["role"] == "user"])

    def chat_stream(
        self, session: ChatSession, model: str, system_prompt: str, temperature: float,
        max_tokens: int,
    ) -> Iterator[tuple[list[dict], ChatSession, Any]]:
        if not session.history or session.history[-1]["role"] != "user":
            yield session.history, session, gr.update()
            return
        if not model:
            raise gr.Error("No model is selected: is the endpoint running? Press Refresh models.")
        messages = [{"role": "system", "content": system_prompt}] + list(session.history)
        session.append("assistant", "", model)
        session.stop_requested = False
        answer = session.history[-1]
        status = gr.update()
        try:
            for piece in self.endpoint.stream_chat(model, messages, temperature, int(max_tokens)):
                answer["content"] += piece
                yield session.history, session, gr.update()
                if session.stop_requested:
                    break
            status = f"{UP} `{self.endpoint.api_base}` · {model} answered"
        except EndpointError as error:
            gr.Warning(str(error))
            status = f"{DOWN} {error}"
            if not answer["content"]:
                session.pop()  # keep the question so Retry can send it again
        self.persist_chat(session)
        yield session.history, session, status

    def persist_chat(self, session: ChatSession) -> None:
        """Store the messages not stored yet; on failure warn and try again next time."""
        try:
            if not session.stored_conversation:
                self.store.start_conversation(session.assistant, "chat", session.conversation_id)
                session.stored_conversation = True
            for index, message in enumerate(session.history):
                if session.ids[index] is not None or not message["content"]:
                    continue
                model = session.models[index]
                session.ids[index] = self.store.add_message(
                    session.conversation_id, message["role"], message["content"], model,
                    adapter_version(model, self.adapters_dir) if model else None,
                )
        except FeedbackWriteError as error:
            gr.Warning(f"The conversation was not saved: {error}")

    def chat_stop(self, session: ChatSession) -> ChatSession:
        session.stop_requested = True
        return session

    def chat_retry(self, session: ChatSession):
        """Drop the last answer so that the question is asked again."""
        if session.history and session.history[-1]["role"] == "assistant":
            session.pop()
        if not session.history:
            raise gr.Error("Nothing to retry yet.")
        return session.history, session

    def chat_undo(self, session: ChatSession):
        """Remove the last question and its answer; put the question back in the textbox."""
        if session.history and session.history[-1]["role"] == "assistant":
            session.pop()
        text = session.pop()["content"] if session.history else ""
        return session.history, session, text, self._chat_safety(session)

    def chat_rate(self, session: ChatSession, data: gr.LikeData):
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        liked = data.liked
        rating = 1 if liked in (True, "Like") else -1 if liked in (False, "Dislike") else 0
        if not rating or not 0 <= index < len(session.history):
            return
        if session.history[index]["role"] != "assistant":
            return
        self.persist_chat(session)
        message_id = session.ids[index]
        if message_id is None:
            return  # persist_chat has already warned
        try:
            self.store.rate_message(message_id, rating)
        except FeedbackWriteError as error:
            gr.Warning(f"Your rating was not saved: {error}")
            return
        gr.Info("Thanks, rating saved.", duration=2)

    # --- compare -------------------------------------------------------------------------

    def clear_compare(self):
        return (gr.update(value=[], label="Model A"), gr.update(value=[], label="Model B"),
                CompareSession(), gr.update(visible=False), *self._vote_buttons(False), "")

    @staticmethod
    def _vote_buttons(enabled: bool) -> list:
        return [gr.update(interactive=enabled) for _ in VOTE_BUTTONS]

    def _side_updates(self, session: CompareSession, with_values: bool) -> tuple[Any, Any]:
        """The two chatbots' labels (hidden names in blind mode until the vote)."""
        if session.blind and not session.revealed:
            labels = ("Model A", "Model B")
        else:
            labels = (self.label(session.left), self.label(session.right))
        if not with_values:
            return gr.update(label=labels[0]), gr.update(label=labels[1])
        return (gr.update(value=session.left_history, label=labels[0]),
                gr.update(value=session.right_history, label=labels[1]))

    def compare_submit(
        self, text: str, session: CompareSession, assistant: str, model_a: str, model_b: str,
        blind: bool,
    ):
        text = self.check_input(text)
        if not model_a or not model_b:
            raise gr.Error("Choose two models (press Refresh models if the lists are empty).")
        if session.pending_vote is not None:
            gr.Info("The previous answers were not voted on; continuing without a vote.")
        if not session.conversation_id or session.assistant != assistant or {
            session.left, session.right} != {model_a, model_b}:
            sides = [model_a, model_b]
            if blind:
                random.shuffle(sides)  # blind: which side is which must not be guessable
            session = CompareSession(
                conversation_id=new_conversation_id(), assistant=assistant,
                left=sides[0], right=sides[1], blind=bool(blind),
            )
            if model_a == model_b:
                gr.Warning("Both sides use the same model: the vote will not count on the "
                           "leaderboard.")
        session.pending_vote = None
        for history in (session.left_history, session.right_history):
            history.append({"role": "user", "content": text})
        left, right = self._side_updates(session, with_values=True)
        safety = self.safety_update(
            [m["content"] for m in session.left_history if m["role"] == "user"])
        return ("", left, right, session, safety, *self._vote_buttons(False), "")

    def compare_stream(
        self, session: CompareSession, system_prompt: str, temperature: float, max_tokens: int,
    ):
        if not session.left_history or session.left_history[-1]["role"] != "user":
            yield session.left_history, session.right_history, session, gr.update()
            return
        system = [{"role": "system", "content": system_prompt}]
        jobs = [
            (session.left, system + list(session.left_history)),
            (session.right, system + list(session.right_history)),
        ]
        histories = (session.left_history, session.right_history)
        answers = [{"role": "assistant", "content": ""}, {"role": "assistant", "content": ""}]
        for history, answer in zip(histories, answers, strict=True):
            history.append(answer)
        session.stop_requested = False
        errors: list[str] = []
        for side, piece, error in self._stream_both(jobs, session, temperature, int(max_tokens)):
            if error is not None:
                errors.append(f"{'left' if side == 0 else 'right'} side: {error}")
                gr.Warning(str(error))
                continue
            answers[side]["content"] += piece
            yield session.left_history, session.right_history, session, gr.update()
        if errors or not all(a["content"] for a in answers):
            status = f"{DOWN} " + "; ".join(errors or ["a model returned an empty answer"])
            yield session.left_history, session.right_history, session, status
            return
        self._persist_compare(session)
        session.pending_vote = Vote(
            conversation_id=session.conversation_id, assistant=session.assistant,
            model_a=session.left, model_b=session.right, winner="tie",
            prompt=session.left_history[-2]["content"],
            answer_a=answers[0]["content"], answer_b=answers[1]["content"],
            blind=session.blind and not session.revealed,
            model_a_version=adapter_version(session.left, self.adapters_dir),
            model_b_version=adapter_version(session.right, self.adapters_dir),
        )
        yield (session.left_history, session.right_history, session,
               "Both answers are in: which one is better?")

    def _stream_both(
        self, jobs: list[tuple[str, list[dict]]], session: CompareSession, temperature: float,
        max_tokens: int,
    ) -> Iterator[tuple[int, str, Exception | None]]:
        """Run both requests at once; yield (side, text piece, error) as they arrive."""
        events: queue.Queue = queue.Queue()
        finished = object()

        def worker(side: int, model: str, messages: list[dict]) -> None:
            try:
                for piece in self.endpoint.stream_chat(model, messages, temperature, max_tokens):
                    if session.stop_requested:
                        break
                    events.put((side, piece, None))
            except EndpointError as error:
                events.put((side, "", error))
            finally:
                events.put((side, finished, None))

        for side, (model, messages) in enumerate(jobs):
            threading.Thread(target=worker, args=(side, model, messages), daemon=True).start()
        running = len(jobs)
        while running:
            side, piece, error = events.get()
            if piece is finished:
                running -= 1
            else:
                yield side, piece, error

    def _persist_compare(self, session: CompareSession) -> None:
        try:
            if not session.stored_conversation:
                self.store.start_conversation(
                    session.assistant, "compare", session.conversation_id)
                session.stored_conversation = True
            cid = session.conversation_id
            self.store.add_message(cid, "user", session.left_history[-2]["content"])
            for model, history in ((session.left, session.left_history),
                                   (session.right, session.right_history)):
                self.store.add_message(cid, "assistant", history[-1]["content"], model,
                                       adapter_version(model, self.adapters_dir))
        except FeedbackWriteError as error:
            gr.Warning(f"The conversation was not saved: {error}")

    def vote_buttons_for(self, session: CompareSession) -> list:
        return self._vote_buttons(session.pending_vote is not None)

    def compare_stop(self, session: CompareSession) -> CompareSession:
        session.stop_requested = True
        return session

    def voter(self, winner: str):
        """The click handler of one vote button."""

        def handle(comment: str, session: CompareSession):
            return self.vote(winner, comment, session)

        return handle

    def vote(self, winner: str, comment: str, session: CompareSession):
        """Store the vote; on failure keep it and the buttons so the user can try again."""
        vote = session.pending_vote
        if vote is None:
            gr.Warning("There is nothing to vote on: ask both models something first.")
            return (session, gr.update(), *self._vote_buttons(False), gr.update(), gr.update(),
                    gr.update())
        vote.winner = winner
        vote.comment = (comment or "").strip()
        try:
            vote_id = self.store.record_vote(vote)
        except FeedbackWriteError as error:
            gr.Warning(str(error))
            message = f"**Vote not saved** — {error} Your vote is kept: press it again to retry."
            return (session, message, *self._vote_buttons(True), gr.update(), gr.update(),
                    gr.update())
        session.pending_vote = None
        session.revealed = True
        label_left, label_right = self._side_updates(session, with_values=False)
        verdict = dict((key, text) for text, key in VOTE_BUTTONS)[winner]
        message = (f"Vote #{vote_id} saved ({verdict}). Left: **{self.label(session.left)}**, "
                   f"right: **{self.label(session.right)}**. Ask a follow-up or press Clear.")
        return session, message, *self._vote_buttons(False), label_left, label_right, ""

    # --- leaderboard ---------------------------------------------------------------------

    def leaderboard(self, assistant: str):
        try:
            votes = self.store.votes(assistant)
        except FeedbackWriteError as error:
            return [], None, f"Cannot read the votes: {error}"
        standings = lb.leaderboard(votes, rounds=self.bootstrap_rounds)
        rows = [
            [rank, s.model, parse_model(s.model).label, round(s.rating, 1),
             f"{s.ci_low:.0f} – {s.ci_high:.0f}", f"{100 * s.win_rate:.1f}%", s.votes,
             f"{s.wins} / {s.losses} / {s.ties}"]
            for rank, s in enumerate(standings, start=1)
        ]
        counted = len(lb.battles_from_votes(votes))
        summary = (f"**{assistant}**: {counted} votes between {len(standings)} models "
                   f"(ratings: Bradley–Terry on the Elo scale, mean 1000; 95% bootstrap "
                   f"intervals from {self.bootstrap_rounds} resamples).")
        if not standings:
            summary = f"**{assistant}**: no votes yet. Vote in the Compare tab."
        return rows, rating_plot(standings, assistant), summary


LEADERBOARD_HEADERS = ["Rank", "Model", "Kind", "Rating", "95% CI", "Win rate", "Votes",
                       "W / L / T"]


def rating_plot(standings: list[lb.Standing], assistant: str):
    """Ratings with their intervals, best on top (a matplotlib Figure, not pyplot)."""
    if not standings:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 0.6 * len(standings) + 1.2), layout="constrained")
    axes = figure.subplots()
    ordered = list(reversed(standings))
    ratings = [s.rating for s in ordered]
    errors = [[s.rating - s.ci_low for s in ordered], [s.ci_high - s.rating for s in ordered]]
    axes.errorbar(ratings, range(len(ordered)), xerr=errors, fmt="o", capsize=4)
    axes.set_yticks(range(len(ordered)), [f"{s.model} ({s.votes})" for s in ordered])
    axes.axvline(lb.INIT_RATING, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("Bradley–Terry rating (Elo scale), 95% bootstrap interval")
    axes.set_title(f"{assistant} assistant")
    return figure


def build_app(ui: QtuneUI, default_assistant: str | None = None) -> gr.Blocks:
    """The Gradio Blocks of the whole UI."""
    assistant_value = default_assistant or ASSISTANTS[0]
    with gr.Blocks(title="qtune", analytics_enabled=False) as demo:
        gr.Markdown("## qtune · quantum-tuned assistants\nChat with the served models, compare "
                    "two side by side and vote; the leaderboard ranks them.")
        with gr.Row(equal_height=True):
            assistant = gr.Dropdown(list(ASSISTANTS), value=assistant_value, label="Assistant",
                                    scale=1, elem_id="assistant")
            status = gr.Markdown("Connecting…", elem_id="status")
            refresh = gr.Button("Refresh models", scale=0, elem_id="refresh")
        with gr.Accordion("Generation settings", open=False):
            system_prompt = gr.Textbox(SYSTEM_PROMPTS.get(assistant_value, ""), lines=4,
                                       label="System prompt (editable; changes apply to the "
                                             "next answer)")
            with gr.Row():
                temperature = gr.Slider(0.0, 1.5, DEFAULT_TEMPERATURE, step=0.05,
                                        label="Temperature", elem_id="temperature")
                max_tokens = gr.Slider(16, 1024, ui.max_tokens, step=16,
                                       label="Max new tokens", elem_id="max-tokens")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                chat_parts = _chat_tab(ui)
            with gr.Tab("Compare", id="compare"):
                compare_parts = _compare_tab(ui)
            with gr.Tab("Leaderboard", id="leaderboard") as board_tab:
                board_parts = _leaderboard_tab()
        _wire(ui, demo, locals())
    return demo


def _chat_tab(ui: QtuneUI) -> dict:
    model = gr.Dropdown([], label="Model", elem_id="chat-model")
    with gr.Row():
        chatbot = gr.Chatbot([], label="Chat", height=460, elem_id="chat-bot", scale=3,
                             buttons=["copy"])
        with gr.Column(scale=1, visible=False, elem_id="chat-safety") as safety:
            gr.Markdown(CRISIS_RESOURCES)
    text = gr.Textbox(placeholder="Ask something… (Enter sends)", show_label=False,
                      elem_id="chat-input", max_lines=8)
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="chat-send")
        stop = gr.Button("Stop", elem_id="chat-stop")
        retry = gr.Button("Retry", elem_id="chat-retry")
        undo = gr.Button("Undo", elem_id="chat-undo")
        clear = gr.Button("Clear", elem_id="chat-clear")
    session = gr.State(ChatSession())
    return dict(model=model, chatbot=chatbot, safety=safety, text=text, send=send, stop=stop,
                retry=retry, undo=undo, clear=clear, session=session)


def _compare_tab(ui: QtuneUI) -> dict:
    with gr.Row():
        model_a = gr.Dropdown([], label="First model", elem_id="compare-model-a")
        model_b = gr.Dropdown([], label="Second model", elem_id="compare-model-b")
        blind = gr.Checkbox(True, label="Blind (hide names until the vote)", elem_id="blind")
    with gr.Row():
        left = gr.Chatbot([], label="Model A", height=380, elem_id="compare-left",
                          feedback_options=None, buttons=["copy"], scale=2)
        right = gr.Chatbot([], label="Model B", height=380, elem_id="compare-right",
                           feedback_options=None, buttons=["copy"], scale=2)
        with gr.Column(scale=1, visible=False, elem_id="compare-safety") as safety:
            gr.Markdown(CRISIS_RESOURCES)
    text = gr.Textbox(placeholder="One prompt for both models… (Enter sends)", show_label=False,
                      elem_id="compare-input", max_lines=8)
    with gr.Row():
        send = gr.Button("Send to both", variant="primary", elem_id="compare-send")
        stop = gr.Button("Stop", elem_id="compare-stop")
        clear = gr.Button("Clear", elem_id="compare-clear")
    with gr.Row():
        votes = [gr.Button(text, interactive=False, elem_id=f"vote-{key.split()[0]}"
                           + ("-bad" if "bothbad" in key else ""))
                 for text, key in VOTE_BUTTONS]
    comment = gr.Textbox(label="Comment (optional, saved with the vote)", elem_id="comment")
    vote_status = gr.Markdown(elem_id="vote-status")
    session = gr.State(CompareSession())
    return dict(model_a=model_a, model_b=model_b, blind=blind, left=left, right=right,
                safety=safety, text=text, send=send, stop=stop, clear=clear, votes=votes,
                comment=comment, vote_status=vote_status, session=session)


def _leaderboard_tab() -> dict:
    summary = gr.Markdown(elem_id="board-summary")
    refresh = gr.Button("Recompute", elem_id="board-refresh")
    table = gr.Dataframe(headers=LEADERBOARD_HEADERS, interactive=False, elem_id="board-table")
    plot = gr.Plot(label="Ratings", elem_id="board-plot")
    return dict(summary=summary, refresh=refresh, table=table, plot=plot)


def _wire(ui: QtuneUI, demo: gr.Blocks, parts: dict) -> None:
    """Connect the events (kept apart from the layout to keep both readable)."""
    chat, cmp, board = parts["chat_parts"], parts["compare_parts"], parts["board_parts"]
    assistant, status = parts["assistant"], parts["status"]
    system_prompt, temperature = parts["system_prompt"], parts["temperature"]
    max_tokens = parts["max_tokens"]
    model_outputs = [chat["model"], cmp["model_a"], cmp["model_b"], status]
    refresh_inputs = [assistant, chat["model"], cmp["model_a"], cmp["model_b"]]
    chat_clear_outputs = [chat["chatbot"], chat["session"], chat["safety"], chat["text"]]
    compare_clear_outputs = [cmp["left"], cmp["right"], cmp["session"], cmp["safety"],
                             *cmp["votes"], cmp["vote_status"]]
    board_outputs = [board["table"], board["plot"], board["summary"]]

    demo.load(ui.refresh, refresh_inputs, model_outputs)
    gr.Timer(RECOVERY_POLL_S).tick(ui.recover, [status, *refresh_inputs], model_outputs,
                                   show_progress="hidden", queue=False)
    parts["refresh"].click(ui.refresh, refresh_inputs, model_outputs)
    assistant.change(
        ui.change_assistant, assistant,
        [system_prompt, *model_outputs, *chat_clear_outputs, *compare_clear_outputs],
    ).then(ui.leaderboard, assistant, board_outputs)

    # Chat: validate and show the question, then stream the answer.
    stream_args = ([chat["session"], chat["model"], system_prompt, temperature, max_tokens],
                   [chat["chatbot"], chat["session"], status])
    submit_outputs = [chat["text"], chat["chatbot"], chat["session"], chat["safety"]]
    streams = []
    for trigger in (chat["text"].submit, chat["send"].click):
        streams.append(
            trigger(ui.chat_submit, [chat["text"], chat["session"], assistant], submit_outputs)
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
    chat["chatbot"].like(ui.chat_rate, chat["session"], None)

    # Compare: both streams at once; votes enabled when both answers are complete.
    compare_submit_outputs = [cmp["text"], cmp["left"], cmp["right"], cmp["session"],
                              cmp["safety"], *cmp["votes"], cmp["vote_status"]]
    compare_streams = []
    for trigger in (cmp["text"].submit, cmp["send"].click):
        compare_streams.append(
            trigger(ui.compare_submit,
                    [cmp["text"], cmp["session"], assistant, cmp["model_a"], cmp["model_b"],
                     cmp["blind"]],
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
        ).then(ui.leaderboard, assistant, board_outputs)

    parts["board_tab"].select(ui.leaderboard, assistant, board_outputs)
    board["refresh"].click(ui.leaderboard, assistant, board_outputs)
    demo.load(ui.leaderboard, assistant, board_outputs)


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
) -> gr.Blocks:
    """Build and start the app; with ``block=False`` return at once (tests, ``qtune up``)."""
    if not is_loopback(host) and auth is None:
        log.warning(
            "the UI listens on %s without a login: anyone who can reach this address can use "
            "the models and vote. Pass --auth USER:PASSWORD.", host)
    demo = build_app(ui)
    demo.queue(default_concurrency_limit=8)
    demo.launch(
        server_name=host, server_port=port or settings().ui_port, auth=auth,
        prevent_thread_lock=not block, share=False, inbrowser=False, quiet=not block,
        show_error=True, footer_links=[], ssr_mode=False,
    )
    return demo
