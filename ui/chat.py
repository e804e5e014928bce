"""The Chat view: one assistant, one model, streamed; stop, retry, undo, clear, thumbs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
from qtune.feedback.store import FLAG_REASONS, FeedbackWriteError, new_conversation_id
from qtune.ui.endpoint import EndpointError
from qtune.ui.safety import CRISIS_RESOURCES
from qtune.ui.state import (
    DOWN,
    LATEX_DELIMITERS,
    LOCAL_OWNER,
    SAVE_EVERY_S,
    UP,
    ChatSession,
    UIState,
)


class ChatHandlers(UIState):
    """Event handlers of the Chat tab."""

    def clear_chat(self):
        return [], ChatSession(), gr.update(visible=False), ""

    def chat_submit(self, text: str, session: ChatSession, assistant: str,
                    owner: str = LOCAL_OWNER, request: gr.Request = None):
        if session.streaming:
            raise gr.Error("An answer is still arriving: wait for it, or press Stop, then send.")
        text = self.check_input(text)
        refusal = self.rate_refusal(self.message_limit, request, "questions")
        if refusal:
            raise gr.Error(refusal, title="Slow down")
        if (not session.conversation_id or session.assistant != assistant
                or session.owner != owner):
            session = ChatSession(conversation_id=new_conversation_id(), assistant=assistant,
                                  owner=owner)
        session.append("user", text)
        self.persist_chat(session)  # the question is kept even if the tab closes now
        return "", session.history, session, self._chat_safety(session, session.ids[-1])

    def _chat_safety(self, session: ChatSession, new_message_id: int | None = None):
        return self.safety_update([m["content"] for m in session.history if m["role"] == "user"],
                                  session.assistant, new_message_id)

    def chat_stream(
        self, session: ChatSession, model: str, system_prompt: str, temperature: float,
        max_tokens: int,
    ) -> Iterator[tuple[list[dict], ChatSession, Any]]:
        """Stream the answer, storing it as it arrives: a closed tab, a Stop or a lost
        endpoint leaves it in the database marked incomplete, with why."""
        if not session.history or session.history[-1]["role"] != "user":
            yield session.history, session, gr.update()
            return
        if not model:
            raise gr.Error("No model is selected: is the endpoint running? Press Refresh models.")
        messages = [{"role": "system", "content": system_prompt}] + list(session.history)
        session.append("assistant", "", model)
        session.stop_requested, session.streaming = False, True
        answer, index = session.history[-1], len(session.history) - 1
        self._save_answer(session, index, "streaming")
        ended, note, status = "incomplete", "the page was closed while the answer arrived", None
        saved_at, screened = time.monotonic(), False
        pieces = self.endpoint.stream_chat(model, messages, temperature, int(max_tokens))
        try:
            for piece in pieces:
                answer["content"] += piece
                if self.screen_answer(answer):
                    screened = True
                    break
                if time.monotonic() - saved_at >= SAVE_EVERY_S:
                    self._save_answer(session, index, "streaming")
                    saved_at = time.monotonic()
                yield session.history, session, gr.update()
                if session.stop_requested:
                    break
            ended, note = (("incomplete", "stopped by the user") if session.stop_requested
                           else ("incomplete", "replaced by the safety screen") if screened
                           else ("complete", None))
            status = f"{UP} `{self.endpoint.api_base}` · {model} answered"
        except EndpointError as error:
            gr.Warning(str(error))
            ended, note, status = "incomplete", str(error), f"{DOWN} {error}"
        finally:  # also when the tab is closed (Gradio closes this generator)
            pieces.close()  # closes the stream: vLLM stops generating this answer
            session.streaming = False
            self._save_answer(session, index, ended, note)
        if screened:
            self.record_safety(session.ids[index], "unsafe answer replaced")
        if ended == "incomplete":
            status = f"{status or DOWN} · the answer is incomplete ({note}); it is stored as such"
        if not answer["content"]:
            session.pop()  # keep the question so Retry can send it again
        yield session.history, session, status

    def _save_answer(self, session: ChatSession, index: int, status: str,
                     note: str | None = None) -> None:
        """Insert or update the answer at ``index`` with how far it got."""
        message, model = session.history[index], session.models[index]
        try:
            self.persist_chat(session, until=index)
            if session.ids[index] is None:
                session.ids[index] = self.store.add_message(
                    session.conversation_id, "assistant", message["content"], model,
                    self.version(model) if model else None, status=status,
                    regenerates=session.replaced)
                session.replaced = None
            self.store.update_message(session.ids[index], message["content"], status, note)
        except FeedbackWriteError as error:
            gr.Warning(f"The answer was not saved: {error}")

    def persist_chat(self, session: ChatSession, until: int | None = None) -> None:
        """Store the messages not stored yet (those before ``until``, when given); on
        failure warn and try again next time."""
        try:
            if not session.stored_conversation:
                self.store.start_conversation(session.assistant, "chat", session.conversation_id,
                                              owner=session.owner)
                session.stored_conversation = True
            for index, message in enumerate(session.history[:until]):
                if session.ids[index] is not None or not message["content"]:
                    continue
                model = session.models[index]
                session.ids[index] = self.store.add_message(
                    session.conversation_id, message["role"], message["content"], model,
                    self.version(model) if model else None,
                )
        except FeedbackWriteError as error:
            gr.Warning(f"The conversation was not saved: {error}")

    def chat_stop(self, session: ChatSession) -> ChatSession:
        session.stop_requested = True
        return session

    def chat_retry(self, session: ChatSession):
        """Ask the question again. The earlier answer stays stored; the new one records
        that it regenerates it (siblings: a rating refers to one of them)."""
        if session.history and session.history[-1]["role"] == "assistant":
            session.replaced = session.ids[-1]
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

    def chat_flag(self, session: ChatSession, reason: str | None):
        """Flag the last answer with a reason (stored with the answer it refers to)."""
        answers = [i for i, m in enumerate(session.history) if m["role"] == "assistant"]
        if session.streaming:
            raise gr.Error("Wait until the answer is complete, then flag it.")
        if not answers or session.ids[answers[-1]] is None:
            raise gr.Error("There is no stored answer to flag yet.")
        if not reason or reason not in FLAG_REASONS:
            raise gr.Error("Choose why you flag the answer.")
        if session.ids[answers[-1]] in session.flagged:
            raise gr.Error("You have flagged this answer already.")
        try:
            self.store.flag_message(session.ids[answers[-1]], reason)
        except (FeedbackWriteError, ValueError) as error:
            raise gr.Error(f"The flag was not saved: {error}") from error
        session.flagged.add(session.ids[answers[-1]])
        gr.Info("Thanks: the answer is flagged.", duration=2)

    def chat_rate(self, session: ChatSession, data: gr.LikeData, request: gr.Request = None):
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        liked = data.liked
        rating = 1 if liked in (True, "Like") else -1 if liked in (False, "Dislike") else 0
        if not rating or not 0 <= index < len(session.history):
            return
        if session.history[index]["role"] != "assistant":
            return
        if session.streaming and index == len(session.history) - 1:
            gr.Warning("Wait until the answer is complete, then rate it.")
            return  # only an answer this page has shown in full is rated
        self.persist_chat(session)
        message_id = session.ids[index]
        if message_id is None:
            return  # persist_chat has already warned
        if session.rated.get(message_id) == rating:
            return  # one rating per answer: a repeated click adds nothing
        refusal = self.rate_refusal(self.vote_limit, request, "votes and ratings")
        if refusal:
            gr.Warning(refusal)
            return
        try:
            self.store.rate_message(message_id, rating, voter=session.owner)
        except FeedbackWriteError as error:
            gr.Warning(f"Your rating was not saved: {error}")
            return
        session.rated[message_id] = rating
        gr.Info("Thanks, rating saved.", duration=2)


def chat_tab(ui: ChatHandlers) -> dict:
    model = gr.Dropdown([], label="Model", elem_id="chat-model")
    card = gr.Markdown(elem_id="chat-card")
    with gr.Row():
        chatbot = gr.Chatbot([], label="Chat", height=460, elem_id="chat-bot", scale=3,
                             buttons=["copy"], latex_delimiters=LATEX_DELIMITERS)
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
    with gr.Row():
        flag_reason = gr.Dropdown(list(FLAG_REASONS), value=None, scale=3,
                                  label="Flag the last answer (why?)", elem_id="flag-reason")
        flag = gr.Button("Flag", scale=0, elem_id="chat-flag")
    session = gr.State(ChatSession())
    return dict(card=card, flag_reason=flag_reason, flag=flag, model=model, chatbot=chatbot, safety=safety, text=text, send=send, stop=stop,
                retry=retry, undo=undo, clear=clear, session=session)


