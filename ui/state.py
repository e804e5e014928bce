"""State of the web UI: per-browser sessions (dataclasses) and what every view shares:
the endpoint, the feedback store, the model lists and the input checks."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from qtune.feedback.accounts import Accounts
from qtune.feedback.store import FeedbackStore, FeedbackWriteError, Vote
from qtune.ui.cards import model_card
from qtune.ui.endpoint import Endpoint, EndpointError, ServedModel, default_pair, parse_model
from qtune.ui.limits import RateLimiter, client_of
from qtune.ui.safety import SAFE_ANSWER, check_conversation, is_unsafe_answer

from qtune.adapter_format import adapter_method
from qtune.assistants import RecordedAssistant, adapter_assistant, shipped_assistants
from qtune.config import settings

log = logging.getLogger(__name__)

MAX_INPUT_CHARS = 4000
#: Seconds between checks of an endpoint that is down.
RECOVERY_POLL_S = 10.0
#: Status line prefixes (plain symbols: they render without an emoji font).
UP, DOWN = "●", "✖"
DEFAULT_MAX_TOKENS = 256
#: Math rendered in answers: \( \), \[ \] and $$ -- never a single $, because GSM8K
#: answers are full of prices ("$3 each ... $12").
LATEX_DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
]
#: Longest vote comment stored (a comment is a sentence or two, not a document).
MAX_COMMENT_CHARS = 1000
#: Seconds a voter needs at least to read two answers: a vote sooner is refused.
MIN_READ_SECONDS = 2.0
#: A streaming answer is written to the database at least this often, so that a closed
#: tab or a crash loses at most this much of it.
SAVE_EVERY_S = 1.0
DEFAULT_TEMPERATURE = 0.7
#: The owner of what a handler stores when it is called in process (tests, scripts).
LOCAL_OWNER = "local"
@dataclass
class ChatSession:
    """One browser tab's chat: plain messages, and the database id of each once stored."""

    conversation_id: str = ""
    assistant: str = ""
    owner: str = LOCAL_OWNER
    history: list[dict] = field(default_factory=list)
    models: list[str | None] = field(default_factory=list)
    ids: list[int | None] = field(default_factory=list)
    stored_conversation: bool = False
    stop_requested: bool = False
    #: message id -> the rating given in this tab (one rating per answer and tab)
    rated: dict[int, int] = field(default_factory=dict)
    #: the answers flagged in this tab (one flag per answer and tab)
    flagged: set[int] = field(default_factory=set)
    #: an answer is arriving: a second question must wait
    streaming: bool = False
    #: the stored answer that Retry took back: the next answer regenerates it (its sibling)
    replaced: int | None = None

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
    owner: str = LOCAL_OWNER
    left: str = ""
    right: str = ""
    blind: bool = True
    revealed: bool = False
    left_history: list[dict] = field(default_factory=list)
    right_history: list[dict] = field(default_factory=list)
    stored_conversation: bool = False
    pending_vote: Vote | None = None
    #: when both answers were complete (time.monotonic), for MIN_READ_SECONDS
    answered_at: float = 0.0
    #: both answers are arriving: a second question must wait
    streaming: bool = False
    stop_requested: bool = False


class UIState:
    """Holds the endpoint and the store; its methods are the Gradio event handlers."""

    def __init__(
        self,
        api_base: str | None = None,
        api_key: str | None = None,
        store: FeedbackStore | None = None,
        bootstrap_rounds: int = 200,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        config = settings()
        self.endpoint = Endpoint(api_base or config.api_base, api_key or config.api_key)
        self.store = store or FeedbackStore()
        #: served name -> the model as the endpoint last reported it (/v1/models)
        self.served: dict[str, ServedModel] = {}
        self.bootstrap_rounds = bootstrap_rounds
        self.max_tokens = max_tokens  # the slider's starting value
        self.message_limit = RateLimiter(config.ui_messages_per_minute)
        self.vote_limit = RateLimiter(config.ui_votes_per_minute)
        #: set by launch(): whether people log in, and who among them are admins
        self.login_required = False
        self.admin_names: set[str] = set()
        self.accounts = Accounts(self.store)
        #: the assistants the Assistant list offers: the shipped ones, then every assistant
        #: a served adapter records (learnt from /v1/models), by name
        self.assistants: dict[str, RecordedAssistant] = {
            name: RecordedAssistant.of(a) for name, a in shipped_assistants().items()}
        #: served folder ("root") -> the assistant and method its files record (roots are
        #: versioned: a folder's record never changes)
        self._recorded: dict[str, tuple[RecordedAssistant | None, str | None]] = {}

    @staticmethod
    def rate_refusal(limiter: RateLimiter, request: gr.Request | None, what: str) -> str | None:
        """Why this person (their account, else their address) may not do one more
        ``what`` now, or None (and it is counted)."""
        name = getattr(request, "username", None)
        if limiter.allow(f"user:{name}" if name else client_of(request)):
            return None
        return (f"Too many {what} from you: at most {limiter.limit} a minute. "
                "Wait a minute, then try again.")

    # --- who is using this page ------------------------------------------------------------

    @staticmethod
    def identify(browser_id: str | None, request: gr.Request = None) -> tuple[str, str]:
        """(this browser's own id, kept in its local storage; the owner of what this page
        stores): the account when people log in, else the browser."""
        if not (isinstance(browser_id, str) and len(browser_id) >= 16):
            browser_id = secrets.token_urlsafe(18)
        name = getattr(request, "username", None)
        return browser_id, (f"user:{name}" if name else f"browser:{browser_id}")

    def is_admin(self, owner: str) -> bool:
        """Admins see the leaderboard; without logins the machine's one user is admin."""
        if not self.login_required:
            return True
        name = owner.removeprefix("user:") if owner.startswith("user:") else None
        if name is None:
            return False
        if name in self.admin_names:
            return True
        account = self.accounts.get(name)
        return account is not None and account.admin

    def sees_unowned(self, owner: str) -> bool:
        """Conversations stored before they had owners belong to the machine's owner: the
        single local user, or an admin."""
        return owner == LOCAL_OWNER or self.is_admin(owner)

    # --- models and status ---------------------------------------------------------------

    def version(self, model: str) -> str:
        """The weights version the server reported for ``model`` ("unknown" if never listed)."""
        known = self._listed(model)
        return known.version if known else "unknown"

    def card_for(self, model: str | None) -> str:
        """The model card of a served model (Markdown; empty when none is chosen)."""
        return model_card(self._listed(model) if model else None)

    def connected_text(self, models: list[ServedModel]) -> str:
        return f"{UP} Connected to `{self.endpoint.api_base}` · {len(models)} models served"

    def _models(self) -> tuple[list[ServedModel] | None, str]:
        try:
            models = self.endpoint.models()
        except EndpointError as error:
            return None, f"{DOWN} {error}"
        models = [self._with_assistant(m) for m in models]
        self.served.update({m.name: m for m in models})
        return models, self.connected_text(models)

    def _with_assistant(self, model: ServedModel) -> ServedModel:
        """The model as the assistant its files record (an adapter's name may not tell);
        a new assistant joins the list. Without its files (a remote endpoint) the name
        decides, as before."""
        if model.assistant is None or not model.root:
            return model
        if model.root not in self._recorded:
            self._recorded[model.root] = (adapter_assistant(Path(model.root), model.name),
                                          adapter_method(Path(model.root)))
        recorded, method = self._recorded[model.root]
        if recorded is None:
            return model
        self.assistants.setdefault(recorded.name, recorded)
        return dataclasses.replace(model, assistant=recorded.name, method=method or model.method)

    # --- assistants ----------------------------------------------------------------------

    def learn_assistants(self) -> None:
        """Read the endpoint's models once so that their assistants are known (quietly:
        the status line reports a down endpoint)."""
        self._models()

    def assistant_choices(self) -> list[tuple[str, str]]:
        """(shown text, name) of every known assistant, shipped ones first."""
        return [(f"{a.title} · {name}", name) for name, a in self.assistants.items()]

    def assistant_list(self, assistant: str):
        """The Assistant dropdown refreshed with the assistants learnt since."""
        names = list(self.assistants)
        return gr.update(choices=self.assistant_choices(),
                         value=assistant if assistant in names else names[0])

    def system_prompt_of(self, assistant: str) -> str:
        known = self.assistants.get(assistant)
        return known.system_prompt if known else ""

    def crisis_screened(self, assistant: str) -> bool:
        """Whether the assistant's file (or its adapters' record) asks for the crisis
        screen: its notice shows and its messages also go through the classifier."""
        known = self.assistants.get(assistant)
        return bool(known and known.crisis_screen)

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
        return (self.system_prompt_of(assistant), chat, model_a, model_b, status,
                *self.clear_chat(), *self.clear_compare())

    def label(self, name: str) -> str:
        return f"{self.served_model(name).label} · {name}"

    def served_model(self, name: str) -> ServedModel:
        """What the endpoint said ``name`` is (an adapter has a parent there, whatever its
        name); a name it never listed is read from its form."""
        return self._listed(name) or parse_model(name)

    def _listed(self, name: str) -> ServedModel | None:
        """``name`` as the endpoint last listed it, listing again once if it is unknown."""
        if name not in self.served:
            self._models()
        return self.served.get(name)

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

    def safety_update(self, session_texts: list[str], assistant: str,
                      new_message_id: int | None = None):
        """Show the crisis resources when the conversation so far signals a crisis; when a
        new message made it fire, store that event as a flag on it (not its text). The
        classifier runs for crisis-screened assistants only: its false-alarm rate (docs/ui.md)
        would show the resources beside ordinary math questions; patterns run everywhere."""
        verdict = check_conversation(session_texts, classifier=self.crisis_screened(assistant))
        if verdict.crisis and new_message_id is not None:
            self.record_safety(new_message_id, f"crisis: {verdict.layer}")
        return gr.update(visible=verdict.crisis)

    def record_safety(self, message_id: int | None, reason: str) -> None:
        if message_id is None:
            return
        try:
            self.store.flag_safety(message_id, reason)
        except FeedbackWriteError as error:
            log.warning("safety flag not stored: %s", error)

    @staticmethod
    def screen_answer(answer: dict) -> bool:
        """Replace an answer that encourages or describes self-harm; True when replaced."""
        if answer["content"] == SAFE_ANSWER or not is_unsafe_answer(answer["content"]):
            return False
        answer["content"] = SAFE_ANSWER
        return True
