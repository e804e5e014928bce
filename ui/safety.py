"""What the UI shows and does around a crisis; the detection itself is :mod:`qtune.safety`.

A 135M-parameter model cannot be trusted to respond well to someone who says they want to
die, so every user message, and the conversation as a whole, is checked (patterns, then a
trained classifier; see docs/ui.md for what it catches and what it misses). When it fires,
crisis resources appear beside the answer and the event is stored as a flag (not the
message text). The model's own answers are screened too: one that encourages or describes
self-harm is replaced by :data:`SAFE_ANSWER`.
"""

from __future__ import annotations

from qtune.safety.detector import (  # noqa: F401  (the UI's and other code's entry points)
    check_conversation,
    check_message,
    is_crisis,
    is_crisis_conversation,
    is_unsafe_answer,
    warm_up,
)
from qtune.safety.responses import CRISIS_RESOURCES, SAFE_ANSWER  # noqa: F401

#: Shown on a crisis-screened assistant (counselling) until the person dismisses it.
COUNSELLING_NOTICE = """\
**Before you start:** this counselling assistant is an *experimental* 135M-parameter model
fine-tuned for research. It is **not a therapist** and **not for emergencies**: it can be
wrong, and it cannot call for help. If you are in crisis, call your local emergency number
(112 / 911 / 999 / 120 / 110), call or text **988** in the US, Samaritans **116 123** in the
UK & Ireland, 希望24热线 **400-161-9995** in China, or find a line at https://findahelpline.com.
"""
