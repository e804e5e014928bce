"""Crisis detection for user messages: show crisis resources whatever the model answers.

A 135M-parameter model cannot be trusted to respond well to someone who says they want to
die, so the UI checks each *user* message against a list of phrasings that express
suicidal thoughts or self-harm (English and Chinese) and, on a match, shows crisis
resources beside the answer.

This is keyword matching, not understanding. It errs on the side of showing the
resources: a message that mentions suicide at all ("my friend talked about suicide")
matches, and so does a negated one ("I would never kill myself"). It skips common
idioms ("this traffic is killing me", "笑死我了", "想死你了"). It misses indirect wording
("I just want everything to stop"), misspellings, other languages and anything said
across several messages. See docs/ui.md.
"""

from __future__ import annotations

import re
import unicodedata

# English: first person or explicit, so that idioms ("killing me", "dying to") pass.
_ENGLISH = [
    r"\bsuicid(e|al|ality)\b",
    r"\bkill(ing)? my ?self\b",
    r"\bkms\b",
    r"\b(end|ending|take|taking) my (own )?life\b",
    r"\b(end|ending) it all\b",
    r"\b(want|wanna|wanted|going|plan|planning) (to )?die\b",
    r"\bwish (that )?i (was|were) (dead|never born)\b",
    r"\b(better off|rather be) dead\b",
    r"\b(don'?t|do not|no longer) want to (live|be alive|exist|wake up)\b",
    r"\bno (reason|point) (in |to )?(living|live|go(ing)? on)\b",
    r"\bcan'?t go on (living|anymore|any more)\b",
    r"\b(hurt|harm|cut|cutting|hurting|harming|burn|burning) my ?self\b",
    r"\bself[- ]?harm(ing)?\b",
    r"\bhang my ?self\b",
    r"\boverdos(e|ing)\b",
    r"\bjump (off|from) (a|the) (bridge|building|roof)\b",
]

# Chinese: the characters carry the meaning; idioms such as 想死你了 ("miss you to death")
# and 笑死/累死/热死 ("… to death" = very) are excluded by the patterns below.
_CHINESE = [
    r"自杀",
    r"自殺",
    r"轻生",
    r"輕生",
    r"寻死",
    r"尋死",
    r"想死(?!你|您|他|她|它|我了|了你|人)",
    r"不想活",
    r"活不下去",
    r"活着没(有)?(意思|意义)",
    r"结束(我的|自己的)?生命",
    r"了结(自己|我自己)",
    r"自残",
    r"自殘",
    r"割腕",
    r"(伤害|傷害)自己",
    r"跳楼",
    r"跳樓",
]

_PATTERN = re.compile("|".join(f"(?:{p})" for p in _ENGLISH + _CHINESE))


def normalise(text: str) -> str:
    """Fold width, case, curly apostrophes and runs of whitespace."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", text).strip()


def is_crisis(text: str) -> bool:
    """True when a user message reads as suicidal thoughts or self-harm."""
    return bool(_PATTERN.search(normalise(text)))


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
