"""The feedback store: conversations, pairwise votes and answer ratings in SQLite.

Everything the web UI learns from its users lands here: each chat or comparison is a
*conversation* with its *messages*; a comparison ends in a *vote* (Chatbot Arena's
``model_a`` / ``model_b`` / ``tie`` / ``tie (bothbad)``); thumbs up/down on a single answer
is a *rating*. ``export`` turns it into JSON Lines, including DPO-ready preference pairs.

Design choices:

* WAL journal, so readers (the leaderboard) never block the writers (the votes).
* ``PRAGMA user_version`` holds the schema version; ``MIGRATIONS`` are applied in order,
  each in its own transaction, so an old database is upgraded in place.
* Every write is one ``BEGIN IMMEDIATE`` transaction on a short-lived connection with a busy
  timeout, retried a few times. When the database stays locked or cannot be written, a
  :class:`FeedbackWriteError` says so; nothing is half-written and nothing is dropped
  silently (the UI keeps the vote so the user can retry).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils
from qtune.feedback.migrations import MIGRATIONS

from qtune.config import settings
from qtune.errors import QtuneError

#: Chatbot Arena's outcome labels.
WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
MODES = ("chat", "compare")
#: Why a person flags an answer.
FLAG_REASONS = ("harmful or unsafe", "wrong", "off topic", "offensive", "other")
#: Why the safety screen flags a message (the event only; the text stays where it was).
SAFETY_REASONS = ("crisis: pattern", "crisis: classifier", "crisis: conversation",
                  "unsafe answer replaced")
#: How far an answer got: still arriving, finished, or stopped early (with a note why).
MESSAGE_STATUSES = ("streaming", "complete", "incomplete")


class FeedbackWriteError(QtuneError):
    """The feedback database could not be written (locked, read-only, bad path)."""


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Vote:
    """One pairwise judgement; kept by the UI until it is stored."""

    conversation_id: str
    assistant: str
    model_a: str
    model_b: str
    winner: str
    prompt: str
    answer_a: str
    answer_b: str
    blind: bool = True
    comment: str = ""
    model_a_version: str = "base"
    model_b_version: str = "base"
    #: An answer said which model it is: the battle is kept but not counted (Chatbot Arena).
    names_model: bool = False
    #: who voted: an account's name, or a browser's own id (qtune.ui.owners)
    voter: str | None = None

    def __post_init__(self) -> None:
        if self.winner not in WINNERS:
            raise ValueError(f"winner must be one of {WINNERS}, not {self.winner!r}")


# --- schema migrations -------------------------------------------------------------------


SCHEMA_VERSION = len(MIGRATIONS)


class FeedbackStore:
    """Votes, ratings and conversations in one SQLite file (``settings().db_path`` by default).

    The store opens a fresh connection for each operation, so one instance may be shared by
    the UI's worker threads. The schema is created or upgraded on first use, not in the
    constructor, so a UI whose database is broken still starts and reports the problem on
    the first write.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        busy_timeout: float = 5.0,
        retries: int = 3,
        target_version: int = SCHEMA_VERSION,
    ) -> None:
        self.path = Path(path) if path is not None else settings().db_path
        self.busy_timeout = busy_timeout
        self.retries = retries
        self.target_version = target_version
        self._ready = False

    # --- connections and transactions ----------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as error:
            raise FeedbackWriteError(
                f"cannot open the feedback database {self.path}: {error}. "
                "Point QTUNE_DB at a writable file."
            ) from error
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction: BEGIN IMMEDIATE takes the write lock up front (waiting up to
        the busy timeout), so a transaction either commits entirely or leaves no trace."""
        self._ensure_schema()
        conn = self._begin_immediate()
        try:
            yield sqlite_utils.Database(conn)
            conn.execute("COMMIT")
        except BaseException as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(error, sqlite3.Error):
                raise self._write_error(error) from error
            raise
        finally:
            conn.close()

    def _begin_immediate(self) -> sqlite3.Connection:
        last_error: sqlite3.Error | None = None
        for attempt in range(self.retries):
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                return conn
            except sqlite3.OperationalError as error:
                conn.close()
                last_error = error
                if "locked" not in str(error) and "busy" not in str(error):
                    break
                time.sleep(0.05 * (attempt + 1))
        assert last_error is not None
        raise self._write_error(last_error)

    def _write_error(self, error: sqlite3.Error) -> FeedbackWriteError:
        text = str(error)
        if "locked" in text or "busy" in text:
            hint = (
                f"the feedback database {self.path} is locked by another program "
                f"(waited {self.busy_timeout:g} s, {self.retries} tries). Close the other "
                "program or try again; nothing was saved."
            )
        else:
            hint = (
                f"cannot write the feedback database {self.path}: {text}. Check that the file "
                "and its folder are writable (or set QTUNE_DB); nothing was saved."
            )
        return FeedbackWriteError(hint)

    @contextmanager
    def _read(self) -> Iterator[sqlite_utils.Database]:
        self._ensure_schema()
        conn = self._connect()
        try:
            yield sqlite_utils.Database(conn)
        except sqlite3.Error as error:
            raise FeedbackWriteError(
                f"cannot read the feedback database {self.path}: {error}"
            ) from error
        finally:
            conn.close()

    # --- schema ---------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        conn = self._connect()
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            self._migrate(conn)
        except sqlite3.Error as error:
            raise self._write_error(error) from error
        finally:
            conn.close()
        self._ready = True

    def _migrate(self, conn: sqlite3.Connection) -> None:
        db = sqlite_utils.Database(conn)
        while True:
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= self.target_version:
                conn.execute("COMMIT")
                return
            try:
                MIGRATIONS[version](db)
                # PRAGMA takes no parameters; version is an int we computed.
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        with self._read() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    # --- writes ---------------------------------------------------------------------------

    def start_conversation(
        self, assistant: str, mode: str, conversation_id: str | None = None,
        owner: str | None = None,
    ) -> str:
        """Record a conversation and return its id. The UI may choose the id itself (so that a
        conversation can begin while the database is unavailable); recording the same id
        again is a no-op."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        conversation_id = conversation_id or new_conversation_id()
        with self._write() as db:
            db["conversations"].insert(
                {"id": conversation_id, "assistant": assistant, "mode": mode,
                 "created_at": utc_now(), **({"owner": owner} if owner else {})},
                ignore=True,
            )
        return conversation_id

    def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        model: str | None = None,
        adapter_version: str | None = None,
        status: str = "complete",
        regenerates: int | None = None,
    ) -> int:
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"status must be one of {MESSAGE_STATUSES}, not {status!r}")
        with self._write() as db:
            table = db["messages"]
            table.insert(
                {"conversation_id": conversation_id, "role": role, "content": content,
                 "model": model, "adapter_version": adapter_version or "base",
                 "created_at": utc_now(), "status": status, "regenerates": regenerates}
            )
            return int(table.last_pk)

    def update_message(self, message_id: int, content: str, status: str,
                       note: str | None = None) -> None:
        """Store more of a streaming answer, or how it ended."""
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"status must be one of {MESSAGE_STATUSES}, not {status!r}")
        with self._write() as db:
            db["messages"].update(message_id, {"content": content, "status": status,
                                               "note": note})

    def record_vote(self, vote: Vote) -> int:
        row = asdict(vote)
        row["blind"] = int(vote.blind)
        row["names_model"] = int(vote.names_model)
        row["created_at"] = utc_now()
        with self._write() as db:
            table = db["votes"]
            table.insert(row)
            return int(table.last_pk)

    def flag_message(self, message_id: int, reason: str, comment: str = "") -> int:
        """A person's report that an answer is harmful, wrong, or otherwise bad."""
        if reason not in FLAG_REASONS:
            raise ValueError(f"reason must be one of {FLAG_REASONS}, not {reason!r}")
        return self._insert_flag(message_id, reason, comment[:1000], "person")

    def flag_safety(self, message_id: int, reason: str) -> int:
        """The safety screen's record that a message fired it (see SAFETY_REASONS)."""
        if reason not in SAFETY_REASONS:
            raise ValueError(f"reason must be one of {SAFETY_REASONS}, not {reason!r}")
        return self._insert_flag(message_id, reason, "", "safety screen")

    def flag_endpoint(self, model: str, reason: str) -> int:
        """The served endpoint's screen fired on a request to ``model`` (no text is kept)."""
        if reason not in SAFETY_REASONS:
            raise ValueError(f"reason must be one of {SAFETY_REASONS}, not {reason!r}")
        return self._insert_flag(None, reason, "", "endpoint screen", model)

    def _insert_flag(self, message_id: int | None, reason: str, comment: str, source: str,
                     model: str | None = None) -> int:
        with self._write() as db:
            table = db["flags"]
            table.insert({"message_id": message_id, "reason": reason, "comment": comment,
                          "source": source, "model": model, "created_at": utc_now()})
            return int(table.last_pk)

    def rate_message(self, message_id: int, rating: int, comment: str = "",
                     voter: str | None = None) -> int:
        if rating not in (1, -1):
            raise ValueError("rating must be +1 (thumbs up) or -1 (thumbs down)")
        with self._write() as db:
            table = db["ratings"]
            table.insert(
                {"message_id": message_id, "rating": rating, "comment": comment,
                 "voter": voter, "created_at": utc_now()}
            )
            return int(table.last_pk)

    # --- reads ----------------------------------------------------------------------------

    def votes(self, assistant: str | None = None) -> list[dict]:
        where, args = ("assistant = ?", [assistant]) if assistant else (None, None)
        with self._read() as db:
            rows = list(db["votes"].rows_where(where, args, order_by="id"))
        for row in rows:
            row["blind"] = bool(row["blind"])
            row["names_model"] = bool(row["names_model"])
        return rows

    def flags(self) -> list[dict]:
        with self._read() as db:
            return list(db["flags"].rows_where(order_by="id"))

    def ratings(self) -> list[dict]:
        with self._read() as db:
            return list(db["ratings"].rows_where(order_by="id"))

    def conversations(self) -> list[dict]:
        """Conversations with their messages nested, oldest first."""
        with self._read() as db:
            conversations = list(db["conversations"].rows_where(order_by="created_at"))
            messages: dict[str, list[dict]] = {}
            for message in db["messages"].rows_where(order_by="id"):
                messages.setdefault(message["conversation_id"], []).append(message)
        for conversation in conversations:
            conversation["messages"] = messages.get(conversation["id"], [])
        return conversations
