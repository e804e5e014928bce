"""The layered crisis check the UI calls: patterns, then the classifier, per message and
over the last few messages of a conversation; and the screen on the model's answers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from qtune.safety.classifier import CrisisModel
from qtune.safety.patterns import matches_crisis_pattern, matches_unsafe_answer

#: How many of the latest user messages are read together by the conversation check
#: (chosen on the dev conversations; see docs/ui.md).
CONVERSATION_WINDOW = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    crisis: bool
    layer: str = ""  # "pattern", "classifier" or "conversation"; empty when not a crisis


@lru_cache(maxsize=1)
def crisis_model() -> CrisisModel:
    return CrisisModel.load()


@lru_cache(maxsize=4096)
def classifier_flags(text: str) -> bool:
    """The classifier's verdict on one text, remembered: the UI checks the whole conversation
    on every turn, and each earlier message would otherwise cost another encoder pass."""
    return bool(crisis_model().flags([text])[0])


def warm_up() -> None:
    """Load the classifier and its encoder now (seconds), not on the first message."""
    try:
        crisis_model().flags(["hello"])
    except Exception:  # noqa: BLE001  (a background thread: say it, the first message retries)
        log.exception("could not load the crisis classifier; run `make setup` "
                      "(or `qtune safety prepare`)")


def check_message(text: str, classifier: bool = True) -> Verdict:
    """Patterns, then (unless ``classifier`` is False) the classifier."""
    if matches_crisis_pattern(text):
        return Verdict(True, "pattern")
    if classifier and text.strip() and classifier_flags(text):
        return Verdict(True, "classifier")
    return Verdict(False)


def check_conversation(user_messages: list[str], window: int = CONVERSATION_WINDOW,
                       classifier: bool = True) -> Verdict:
    """Each message alone, then the last ``window`` read as one text, so that hopelessness
    in one message and a means or a plan in the next add up (with the classifier only)."""
    for text in user_messages:
        verdict = check_message(text, classifier)
        if verdict.crisis:
            return verdict
    if not classifier:
        return Verdict(False)
    recent = [text for text in user_messages[-window:] if text.strip()]
    if len(recent) > 1 and classifier_flags("\n".join(recent)):
        return Verdict(True, "conversation")
    return Verdict(False)


def is_crisis(text: str) -> bool:
    """True when one user message reads as suicidal thoughts or self-harm."""
    return check_message(text).crisis


def is_crisis_conversation(user_messages: list[str]) -> bool:
    """True when a conversation (the user's messages, oldest first) signals a crisis."""
    return check_conversation(user_messages).crisis


def is_unsafe_answer(text: str) -> bool:
    """True when the model's answer encourages self-harm or describes how to do it."""
    return matches_unsafe_answer(text)
