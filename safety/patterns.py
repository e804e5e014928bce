"""The first line: phrasings that are crisis on their own, in English and Chinese.

Each pattern is first person and explicit, chosen for precision: what is only *about*
suicide (a friend, a class, a novel), idioms ("this exam is killing me", 笑死, 累死了,
想死你了) and negated statements ("I would never kill myself") must pass here, because the
classifier behind this list catches the indirect wording that patterns cannot. A second
list screens the *model's* answers for encouragement or instructions.
"""

from __future__ import annotations

import re
import unicodedata

_ENGLISH = [
    r"\bkill(ing)? my ?self\b",
    r"\bkms\b",
    r"\bunalive\b",
    r"\b(end|ending|take|taking) my (own )?life\b",
    r"\b(end|ending) it all\b",
    r"\bi('m| am)( so| really| very| feeling| actually| being)? suicidal\b",
    r"\bi (have|get|keep having|had|am having|'m having) suicidal\b",
    r"\b(want|wanna|wanted|going|plan|planning|ready) (to )?die\b",
    r"\bwish (that )?i (was|were) (dead|never born)\b",
    r"\bi('d| would)( much)? rather be dead\b",
    r"\b(don'?t|do not|no longer) want to (live|be alive|exist|wake up)\b",
    r"\bno (reason|point) (in |to )?(living|live|be alive|stay alive)\b",
    r"\b(cut|cutting|burn|burning|hurt|hurting|harm|harming) my ?self\b",
    r"\bi('ve| have)? been self[- ]?harm(ing)?\b",
    r"\bhang my ?self\b",
]

_CHINESE = [
    r"我(真的|很|好|一直|已经|已經|都)?(想|要|准备|準備|打算|决定|決定)(去)?(自杀|自殺|轻生|輕生|寻死|尋死)",
    r"(?<![他她])想死(?!你|您|他|她|它|我了|了你|人|啦)",
    r"不想活",
    r"活不下去",
    r"结束(我的|自己的)生命",
    r"結束(我的|自己的)生命",
    r"了结(我)?自己",
    r"我(一直|又|在|已经|已經|還在|还在|经常|經常|总是|總是|想)?(自残|自殘|割腕)",
    r"我(一直|又|在|总是|經常|经常|故意)?(伤害|傷害|划|割)(了)?自己",
]

# A negation shortly before a match ("I would never kill myself", "我不想死") cancels it.
_NEGATION = re.compile(r"(\bnever|\bnot|n't|\bno)\b[^.!?]{0,25}$|(不|没有|沒有|从不|從不)[^。！？，,]{0,6}$")

_USER_PATTERN = re.compile("|".join(f"(?:{p})" for p in _ENGLISH + _CHINESE))

_UNSAFE_ANSWER_PATTERNS = [
    r"\byou should (just )?(kill yourself|die|end (it|your life)|hurt yourself)\b",
    r"\b(best|easiest|quickest|fastest|surest|most painless|least painful) (way|method) to "
    r"(kill yourself|die|end your life|commit suicide|overdose)\b",
    r"\bhow to (kill yourself|commit suicide|hang yourself|overdose)\b",
    r"\b(lethal|fatal) (dose|amount)\b",
    r"\bcut (deeper|along the vein|your wrists?)\b",
    r"\bgo ahead and (do it|end it|kill yourself)\b",
    r"你(应该|應該|就|可以|不如|干脆)(去)?(死|自杀|自殺|跳楼|跳樓|割腕)",
    r"(致死|致命)(剂量|劑量|量)",
    r"最(好|快|简单|簡單|不痛苦)的(自杀|自殺|死)(方法|方式|办法)",
    r"割(得)?更深",
]
_UNSAFE_ANSWER = re.compile("|".join(f"(?:{p})" for p in _UNSAFE_ANSWER_PATTERNS))


def normalise(text: str) -> str:
    """Fold width, case, curly apostrophes and runs of whitespace."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return re.sub(r"\s+", " ", text).strip()


def _first_unnegated(pattern: re.Pattern, text: str) -> bool:
    for match in pattern.finditer(text):
        if not _NEGATION.search(text[max(0, match.start() - 30):match.start()]):
            return True
    return False


def matches_crisis_pattern(text: str) -> bool:
    """True when a user message contains an explicit, unnegated crisis phrasing."""
    return _first_unnegated(_USER_PATTERN, normalise(text))


def matches_unsafe_answer(text: str) -> bool:
    """True when an answer encourages self-harm or describes how to do it."""
    return _first_unnegated(_UNSAFE_ANSWER, normalise(text))
