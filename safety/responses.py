"""What a person in crisis is shown, by the web UI and by the served endpoint alike."""

from __future__ import annotations

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
