"""Past conversations, for the UI's History panel: list, read, rename, delete, export.

A conversation's title is the one a person gave it, or else the start of its first
question. Deleting a conversation removes its messages and their ratings; the votes cast
in it stay (a vote already counted on the leaderboard is a separate record: export and
delete votes with ``qtune feedback`` tools if they must go too).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from qtune.feedback.store import FeedbackStore

TITLE_CHARS = 60
MAX_TITLE_CHARS = 200


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    assistant: str
    mode: str
    models: tuple[str, ...]
    messages: int
    created_at: str


def default_title(first_question: str | None) -> str:
    text = " ".join((first_question or "(no question)").split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


class History:
    """One person's conversations in a feedback store, newest first.

    ``owner``: whose conversations these are (None: everyone's, for tools run by the
    machine's owner); ``see_unowned``: also those stored before conversations had owners."""

    def __init__(self, store: FeedbackStore, owner: str | None = None,
                 see_unowned: bool = False) -> None:
        self.store, self.owner, self.see_unowned = store, owner, see_unowned

    def visible(self, conversation: dict) -> bool:
        if self.owner is None:
            return True
        owner = conversation.get("owner")
        return owner == self.owner or (owner is None and self.see_unowned)

    def _conversations(self) -> list[dict]:
        return [c for c in self.store.conversations() if self.visible(c)]

    def _own(self, conversation_id: str) -> dict:
        """The conversation, or ValueError unless this person may see and change it."""
        conversation = self.conversation(conversation_id)
        if conversation is None:
            raise ValueError("no such conversation in your history")
        return conversation

    def list(self, limit: int = 200) -> list[ConversationSummary]:
        summaries = []
        for conversation in reversed(self._conversations()):
            messages = conversation["messages"]
            if not messages:
                continue  # started but nothing was said
            first = next((m["content"] for m in messages if m["role"] == "user"), None)
            models = tuple(dict.fromkeys(m["model"] for m in messages if m.get("model")))
            summaries.append(ConversationSummary(
                conversation["id"], conversation.get("title") or default_title(first),
                conversation["assistant"], conversation["mode"], models, len(messages),
                conversation["created_at"]))
            if len(summaries) == limit:
                break
        return summaries

    def conversation(self, conversation_id: str) -> dict | None:
        return next((c for c in self._conversations() if c["id"] == conversation_id), None)

    def rename(self, conversation_id: str, title: str) -> str:
        title = " ".join(title.split())[:MAX_TITLE_CHARS]
        if not title:
            raise ValueError("a title needs at least one character")
        self._own(conversation_id)
        # The store's own transaction: one BEGIN IMMEDIATE with its busy-timeout retries.
        with self.store._write() as db:
            db["conversations"].update(conversation_id, {"title": title})
        return title

    def delete(self, conversation_id: str) -> None:
        self._own(conversation_id)
        with self.store._write() as db:
            ids = [row["id"] for row in db["messages"].rows_where(
                "conversation_id = ?", [conversation_id], select="id")]
            for message_id in ids:
                db["ratings"].delete_where("message_id = ?", [message_id])
            db["messages"].delete_where("conversation_id = ?", [conversation_id])
            db["conversations"].delete_where("id = ?", [conversation_id])

    def export_json(self, conversation_id: str) -> str:
        return json.dumps(self._own(conversation_id), ensure_ascii=False, indent=2)

    def export_markdown(self, conversation_id: str) -> str:
        conversation = self._own(conversation_id)
        first = next((m["content"] for m in conversation["messages"] if m["role"] == "user"), "")
        lines = [f"# {conversation.get('title') or default_title(first)}", "",
                 f"{conversation['assistant']} assistant, {conversation['mode']}, "
                 f"{conversation['created_at']}", ""]
        for message in conversation["messages"]:
            who = "You" if message["role"] == "user" else f"{message.get('model') or 'model'}"
            status = message.get("status") or "complete"
            suffix = "" if status == "complete" else f" *({status}: {message.get('note')})*"
            lines += [f"**{who}**{suffix}:", "", message["content"], ""]
        return "\n".join(lines)

    @staticmethod
    def as_dict(summary: ConversationSummary) -> dict:
        return asdict(summary)
