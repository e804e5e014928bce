"""Crisis detection: phrasings that must show the resources, and idioms that must not."""

from __future__ import annotations

import pytest
from qtune.ui.safety import CRISIS_RESOURCES, is_crisis, normalise

POSITIVES = [
    "I want to kill myself",
    "I've been thinking about killing myself",
    "i   WANT to DIE",
    "I wanna die",
    "sometimes I think about suicide",
    "I feel suicidal tonight",
    "I'm going to end my life",
    "I don't want to live anymore",
    "I don’t want to be alive",  # curly apostrophe
    "I wish I was dead",
    "everyone would be better off if I were gone, I'd be better off dead",
    "I keep cutting myself",
    "I hurt myself when I'm sad",
    "is self-harm normal?",
    "I want to end it all",
    "there is no reason to live",
    "I can't go on anymore",
    "I might take an overdose",
    "I want to jump off a bridge",
    "我想自杀",
    "我真的不想活了",
    "我活不下去了",
    "我想死",
    "有时候我想死。",
    "我想结束自己的生命",
    "我经常自残",
    "我昨天割腕了",
    "我想伤害自己",
    "想跳楼",
    "我覺得活著沒意思，想自殺",  # traditional characters
    "ＫＩＬＬ ＭＹＳＥＬＦ",  # full-width letters
]

NEGATIVES = [
    "this traffic is killing me",
    "my feet are killing me",
    "I'm dying to see that movie",
    "I could kill for a coffee",
    "how do I kill a python process?",
    "I died laughing at that joke",
    "the suspense is killing me",
    "What is the derivative of x^2?",
    "I'm stressed about my exams",
    "I feel lonely since I moved",
    "笑死我了",
    "今天热死了",
    "我累死了",
    "想死你了！",
    "我想死你们了",
    "求解方程 x+1=2",
    "我最近压力很大，睡不好",
]


@pytest.mark.parametrize("text", POSITIVES)
def test_crisis_phrasings_detected(text):
    assert is_crisis(text)


@pytest.mark.parametrize("text", NEGATIVES)
def test_idioms_and_ordinary_messages_pass(text):
    assert not is_crisis(text)


def test_normalise_and_resources():
    assert normalise("  I\tDON’T\n want ") == "i don't want"
    for needle in ("findahelpline.com", "988", "116 123", "400-161-9995"):
        assert needle in CRISIS_RESOURCES
