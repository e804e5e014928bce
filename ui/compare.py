"""The Compare view: one prompt to two models at once, blind by default, and the vote."""

from __future__ import annotations

import contextlib
import queue
import random
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
from qtune.feedback import leaderboard as lb
from qtune.feedback.store import FeedbackWriteError, Vote, new_conversation_id
from qtune.ui.endpoint import EndpointError
from qtune.ui.safety import CRISIS_RESOURCES
from qtune.ui.state import (
    DOWN,
    LATEX_DELIMITERS,
    LOCAL_OWNER,
    MAX_COMMENT_CHARS,
    MIN_READ_SECONDS,
    SAVE_EVERY_S,
    CompareSession,
    UIState,
)

#: Blind answers are sampled at least this warm, each with a fresh seed, so that replaying
#: the prompt at temperature 0 in Chat does not tell which model gave which side.
BLIND_MIN_TEMPERATURE = 0.7

VOTE_BUTTONS = (
    ("← Left is better", "model_a"),
    ("→ Right is better", "model_b"),
    ("Tie", "tie"),
    ("Both are bad", "tie (bothbad)"),
)



class CompareHandlers(UIState):
    """Event handlers of the Compare tab, with the single vote handler."""

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
        blind: bool, owner: str = LOCAL_OWNER, request: gr.Request = None,
    ):
        if session.streaming:
            raise gr.Error("The answers are still arriving: wait for them, or press Stop, "
                           "then send.")
        text = self.check_input(text)
        refusal = self.rate_refusal(self.message_limit, request, "questions")
        if refusal:
            raise gr.Error(refusal, title="Slow down")
        if not model_a or not model_b:
            raise gr.Error("Choose two models (press Refresh models if the lists are empty).")
        if session.pending_vote is not None:
            gr.Info("The previous answers were not voted on; continuing without a vote.")
        if not session.conversation_id or session.assistant != assistant or {
            session.left, session.right} != {model_a, model_b} or session.owner != owner:
            sides = [model_a, model_b]
            if blind:
                random.shuffle(sides)  # blind: which side is which must not be guessable
            session = CompareSession(
                conversation_id=new_conversation_id(), assistant=assistant,
                left=sides[0], right=sides[1], blind=bool(blind), owner=owner,
            )
            if model_a == model_b:
                gr.Warning("Both sides use the same model: the vote will not count on the "
                           "leaderboard.")
        session.pending_vote = None
        for history in (session.left_history, session.right_history):
            history.append({"role": "user", "content": text})
        # the question is kept even if the tab closes
        question_id = self._store(session, "user", text)
        left, right = self._side_updates(session, with_values=True)
        safety = self.safety_update(
            [m["content"] for m in session.left_history if m["role"] == "user"],
            session.assistant, question_id)
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
        session.stop_requested, session.streaming = False, True
        if session.blind and not session.revealed:
            temperature = max(float(temperature), BLIND_MIN_TEMPERATURE)
        ids = [self._store(session, "assistant", "", model, "streaming")
               for model in (session.left, session.right)]
        errors: list[str] = []
        note = "the page was closed while the answers arrived"
        saved_at, screened = time.monotonic(), set()
        try:
            for side, piece, error in self._stream_both(jobs, session, temperature,
                                                        int(max_tokens)):
                if error is not None:
                    errors.append(f"{'left' if side == 0 else 'right'} side: {error}")
                    gr.Warning(str(error))
                    continue
                if side in screened:
                    continue
                answers[side]["content"] += piece
                if self.screen_answer(answers[side]):
                    screened.add(side)
                    errors.append(f"{'left' if side == 0 else 'right'} side: replaced by the "
                                  "safety screen")
                if time.monotonic() - saved_at >= SAVE_EVERY_S:
                    self._update(ids, answers, "streaming")
                    saved_at = time.monotonic()
                yield session.left_history, session.right_history, session, gr.update()
            note = "; ".join(errors) or ("stopped by the user" if session.stop_requested
                                         else None)
        finally:  # also when the tab is closed (Gradio closes this generator)
            session.streaming = False
            session.stop_requested = True  # both workers close their streams to vLLM
            self._update(ids, answers, "incomplete" if note else "complete", note)
            for side in screened:
                self.record_safety(ids[side], "unsafe answer replaced")
        if note or not all(a["content"] for a in answers):
            status = (f"{DOWN} " + (note or "a model returned an empty answer")
                      + ": the answers are stored as incomplete, with no vote")
            yield session.left_history, session.right_history, session, status
            return
        session.pending_vote = Vote(
            conversation_id=session.conversation_id, assistant=session.assistant,
            model_a=session.left, model_b=session.right, winner="tie",
            prompt=session.left_history[-2]["content"],
            answer_a=answers[0]["content"], answer_b=answers[1]["content"],
            blind=session.blind and not session.revealed,
            model_a_version=self.version(session.left),
            model_b_version=self.version(session.right),
            names_model=any(lb.answer_names_model(a["content"], (session.left, session.right))
                            for a in answers),
            voter=session.owner,
        )
        session.answered_at = time.monotonic()
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
                # A fresh seed per answer: replaying a blind prompt in Chat (even at the same
                # temperature) does not reproduce it, so the sides cannot be matched by replay.
                pieces = self.endpoint.stream_chat(model, messages, temperature, max_tokens,
                                                   seed=secrets.randbelow(2**31))
                with contextlib.closing(pieces):  # Stop closes the stream to vLLM at once
                    for piece in pieces:
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

    def _store(self, session: CompareSession, role: str, content: str,
               model: str | None = None, status: str = "complete") -> int | None:
        """Store one message of the comparison (the conversation first, once)."""
        try:
            if not session.stored_conversation:
                self.store.start_conversation(
                    session.assistant, "compare", session.conversation_id, owner=session.owner)
                session.stored_conversation = True
            return self.store.add_message(session.conversation_id, role, content, model,
                                          self.version(model) if model else None, status)
        except FeedbackWriteError as error:
            gr.Warning(f"The conversation was not saved: {error}")
            return None

    def _update(self, ids: list[int | None], answers: list[dict], status: str,
                note: str | None = None) -> None:
        try:
            for message_id, answer in zip(ids, answers, strict=True):
                if message_id is not None:
                    self.store.update_message(message_id, answer["content"], status, note)
        except FeedbackWriteError as error:
            gr.Warning(f"The answers were not saved: {error}")

    def vote_buttons_for(self, session: CompareSession) -> list:
        return self._vote_buttons(session.pending_vote is not None)

    def compare_stop(self, session: CompareSession) -> CompareSession:
        session.stop_requested = True
        return session

    def voter(self, winner: str):
        """The click handler of one vote button."""

        def handle(comment: str, session: CompareSession, request: gr.Request):
            return self.vote(winner, comment, session, request)

        return handle

    @staticmethod
    def _vote_refusal(comment: str | None, session: CompareSession) -> str | None:
        """Why a vote cannot be taken (too fast to have read both answers, an overlong
        comment), or None. Votes must come from people who read the answers."""
        if time.monotonic() - session.answered_at < MIN_READ_SECONDS:
            return "Read both answers first, then vote."
        if len(comment or "") > MAX_COMMENT_CHARS:
            return (f"The comment is {len(comment or ''):,} characters; keep it under "
                    f"{MAX_COMMENT_CHARS:,}.")
        return None

    def vote(self, winner: str, comment: str, session: CompareSession,
             request: gr.Request | None = None):
        """Store the vote; on failure keep it and the buttons so the user can try again."""
        vote = session.pending_vote
        if vote is None:
            gr.Warning("There is nothing to vote on: ask both models something first.")
            return (session, gr.update(), *self._vote_buttons(False), gr.update(), gr.update(),
                    gr.update())
        refusal = (self._vote_refusal(comment, session)
                   or self.rate_refusal(self.vote_limit, request, "votes and ratings"))
        if refusal:
            gr.Warning(refusal)
            return (session, f"**Vote not saved** — {refusal}", *self._vote_buttons(True),
                    gr.update(), gr.update(), gr.update())
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
                   f"right: **{self.label(session.right)}**. Ask a follow-up or press Clear."
                   f"\n\n**Left** — {self.card_for(session.left)}"
                   f"\n\n**Right** — {self.card_for(session.right)}")
        return session, message, *self._vote_buttons(False), label_left, label_right, ""


def compare_tab(ui: CompareHandlers) -> dict:
    with gr.Row():
        model_a = gr.Dropdown([], label="First model", elem_id="compare-model-a")
        model_b = gr.Dropdown([], label="Second model", elem_id="compare-model-b")
        blind = gr.Checkbox(True, label="Blind (hide names until the vote)", elem_id="blind")
    with gr.Row():
        left = gr.Chatbot([], label="Model A", height=380, elem_id="compare-left",
                          feedback_options=None, buttons=["copy"], scale=2,
                          latex_delimiters=LATEX_DELIMITERS)
        right = gr.Chatbot([], label="Model B", height=380, elem_id="compare-right",
                           feedback_options=None, buttons=["copy"], scale=2,
                          latex_delimiters=LATEX_DELIMITERS)
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


