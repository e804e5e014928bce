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

CRISIS_RESOURCES = """\
### You don't have to go through this alone
If you are thinking about suicide or hurting yourself, please talk to someone now.
This assistant is a small experimental model and **cannot help in a crisis**.

- **Anywhere:** find a free, confidential helpline in your country at https://findahelpline.com
- **Emergency:** call your local emergency number (112 / 911 / 999 / 120 / 110)
- **United States:** call or text **988** (Suicide & Crisis Lifeline)
- **United Kingdom & Ireland:** Samaritans **116 123**
- **China:** 希望24热线 **400-161-9995**; 北京心理危机研究与干预中心 **010-82951332**
"""

SAFE_ANSWER = (
    "I can't help with that, and I'm worried about you. You deserve support from a person "
    "right now: please reach out to one of the crisis lines beside this chat, or to "
    "someone you trust.\n\n" + CRISIS_RESOURCES
)

#: The assistants that show COUNSELLING_NOTICE on first use.
NOTICE_ASSISTANTS = ("counselling",)
#: The assistants whose messages also go through the classifier (patterns run for all).
CLASSIFIER_ASSISTANTS = ("counselling",)

#: Shown on the counselling assistant until the person dismisses it.
COUNSELLING_NOTICE = """\
**Before you start:** this counselling assistant is an *experimental* 135M-parameter model
fine-tuned for research. It is **not a therapist** and **not for emergencies**: it can be
wrong, and it cannot call for help. If you are in crisis, call your local emergency number
(112 / 911 / 999 / 120 / 110), call or text **988** in the US, Samaritans **116 123** in the
UK & Ireland, 希望24热线 **400-161-9995** in China, or find a line at https://findahelpline.com.
"""
