"""The History view: past chats and comparisons from the feedback database (so they
survive a page reload and a restart of the UI): reopen a chat and continue it, rename,
delete, export as JSON or Markdown, start a new chat."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
from qtune.feedback.history import History
from qtune.feedback.store import FeedbackWriteError
from qtune.ui.state import LOCAL_OWNER, ChatSession, UIState

HISTORY_HEADERS = ["Title", "Assistant", "Mode", "Models", "Messages", "Started (UTC)"]


class HistoryHandlers(UIState):
    """Event handlers of the History tab."""

    def history_of(self, owner: str) -> History:
        """The conversations ``owner`` may see (their own only)."""
        return History(self.store, owner, see_unowned=self.sees_unowned(owner))

    def history_list(self, owner: str = LOCAL_OWNER):
        """(table rows, conversation ids in row order, status)."""
        try:
            summaries = self.history_of(owner).list()
        except FeedbackWriteError as error:
            return [], [], f"Cannot read the history: {error}"
        rows = [[s.title, s.assistant, s.mode, ", ".join(s.models), s.messages,
                 s.created_at[:16].replace("T", " ")] for s in summaries]
        status = f"{len(rows)} conversations." if rows else "No conversations yet."
        return rows, [s.id for s in summaries], status

    @staticmethod
    def history_select(ids: list[str], event: gr.SelectData):
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        if not 0 <= row < len(ids):
            return "", ""
        title = event.row_value[0] if getattr(event, "row_value", None) else ""
        return ids[row], title

    def history_open(self, conversation_id: str, owner: str = LOCAL_OWNER):
        """Load a chat into the Chat tab to continue it: (chatbot, chat session, assistant,
        tabs, status)."""
        conversation = (self.history_of(owner).conversation(conversation_id)
                        if conversation_id else None)
        if conversation is None:
            raise gr.Error("Pick a conversation in the table first.")
        if conversation["mode"] != "chat":
            raise gr.Error("Comparisons can be read and exported here; continue a chat instead.")
        session = ChatSession(conversation_id=conversation["id"], owner=owner,
                              assistant=conversation["assistant"], stored_conversation=True)
        for message in conversation["messages"]:
            session.append(message["role"], message["content"], message.get("model"))
            session.ids[-1] = message["id"]
        return (session.history, session, conversation["assistant"], gr.Tabs(selected="chat"),
                f"Opened “{conversation.get('title') or conversation_id}” in Chat.")

    def history_rename(self, conversation_id: str, title: str, owner: str = LOCAL_OWNER):
        if not conversation_id:
            raise gr.Error("Pick a conversation in the table first.")
        try:
            self.history_of(owner).rename(conversation_id, title)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        except FeedbackWriteError as error:
            raise gr.Error(f"Not renamed: {error}") from error
        return self.history_list(owner)

    def history_delete(self, conversation_id: str, owner: str = LOCAL_OWNER):
        if not conversation_id:
            raise gr.Error("Pick a conversation in the table first.")
        try:
            self.history_of(owner).delete(conversation_id)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        except FeedbackWriteError as error:
            raise gr.Error(f"Not deleted: {error}") from error
        rows, ids, status = self.history_list(owner)
        return rows, ids, f"Deleted. {status}", "", ""

    def history_export(self, conversation_id: str, kind: str, owner: str = LOCAL_OWNER) -> str:
        """A file to download: the conversation as JSON or Markdown."""
        if not conversation_id:
            raise gr.Error("Pick a conversation in the table first.")
        history = self.history_of(owner)
        try:
            text = (history.export_json(conversation_id) if kind == "json"
                    else history.export_markdown(conversation_id))
        except ValueError as error:
            raise gr.Error(str(error)) from error
        folder = Path(tempfile.mkdtemp(prefix="qtune-export-"))
        path = folder / f"conversation-{conversation_id[:8]}.{'json' if kind == 'json' else 'md'}"
        path.write_text(text, encoding="utf-8")
        return str(path)


def history_tab() -> dict:
    status = gr.Markdown(elem_id="history-status")
    table = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, elem_id="history-table")
    ids = gr.State([])
    selected = gr.State("")
    with gr.Row():
        title = gr.Textbox(label="Title of the selected conversation", scale=3,
                           elem_id="history-title")
        rename = gr.Button("Rename", scale=0, elem_id="history-rename")
    with gr.Row():
        refresh = gr.Button("Refresh", elem_id="history-refresh")
        open_chat = gr.Button("Open in Chat", variant="primary", elem_id="history-open")
        new_chat = gr.Button("New chat", elem_id="history-new")
        delete = gr.Button("Delete", variant="stop", elem_id="history-delete")
    with gr.Row():
        export_json = gr.Button("Export JSON", elem_id="history-export-json")
        export_md = gr.Button("Export Markdown", elem_id="history-export-md")
        download = gr.File(label="Download", interactive=False, elem_id="history-file")
    return dict(status=status, table=table, ids=ids, selected=selected, title=title,
                rename=rename, refresh=refresh, open=open_chat, new=new_chat, delete=delete,
                export_json=export_json, export_md=export_md, download=download)
