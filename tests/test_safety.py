"""Crisis detection (qtune.safety): the data set, the shipped model, the layers, the
answer screen and the flag stored when it fires. Measured rates are in docs/ui.md."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from qtune.feedback.store import SAFETY_REASONS, FeedbackStore
from qtune.safety.classifier import CrisisModel, Features, fit, script_of
from qtune.safety.dataset import load_conversations, load_messages, training_data_hash
from qtune.safety.detector import check_conversation, check_message, is_unsafe_answer
from qtune.safety.evaluate import message_rates
from qtune.safety.patterns import matches_crisis_pattern, normalise
from qtune.safety.train import TARGET_RECALL
from qtune.ui.safety import CRISIS_RESOURCES, SAFE_ANSWER, is_crisis

CRISIS_KINDS = {"direct", "disappear", "means", "plan", "goodbye", "burden", "hopeless",
                "self_harm", "past_attempt"}
HARD_NEGATIVE_KINDS = {"idiom", "third_person", "educational", "games", "cooking", "work",
                       "hair", "negation", "grief", "sadness", "stress"}


def test_data_set_size_kinds_and_splits():
    messages = load_messages()
    counts = Counter((m.lang, m.label) for m in messages)
    for lang in ("en", "zh"):
        assert counts[(lang, "crisis")] >= 300 and counts[(lang, "safe")] >= 300, counts
        kinds = {m.kind for m in messages if m.lang == lang}
        assert kinds >= CRISIS_KINDS | HARD_NEGATIVE_KINDS, (CRISIS_KINDS | HARD_NEGATIVE_KINDS) - kinds
    assert any(m.lang == "mixed" for m in messages)
    texts = [normalise(m.text) for m in messages]
    assert len(texts) == len(set(texts)), "a message appears twice"
    assert {m.split for m in messages} == {"train", "dev", "test"}
    assert {c.split for c in load_conversations()} == {"dev", "test"}


def test_shipped_model_is_built_from_the_current_data():
    """Edit safety/data and forget `qtune safety train`, and this fails."""
    assert CrisisModel.load().data_hash == training_data_hash()


def test_dev_recall_meets_the_target_the_threshold_was_set_for():
    for lang in ("en", "zh"):
        recall, _, missed = message_rates("dev")[lang]
        assert recall.value >= TARGET_RECALL - 1e-9, (lang, missed)


def test_model_file_round_trip(tmp_path):
    texts = ["I want to die", "I love pizza", "我想死", "今天天气好"]
    model = fit(texts, [True, False, True, False], Features(1, 3, 2**12), c=10.0, data_hash="x")
    model.save(tmp_path / "m.npz")
    loaded = CrisisModel.load(tmp_path / "m.npz")
    assert np.allclose(loaded.probabilities(texts), model.probabilities(texts))
    assert loaded.thresholds == model.thresholds and loaded.data_hash == "x"
    with pytest.raises(FileNotFoundError, match="qtune safety train"):
        CrisisModel.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("text", [
    "I want to kill myself", "i   WANT to DIE", "ＫＩＬＬ ＭＹＳＥＬＦ", "I don’t want to be alive",
    "我想自杀", "我真的不想活了", "我活不下去了", "我經常自殘", "gonna unalive myself fr",
])
def test_explicit_phrasings_match_the_first_line(text):
    assert matches_crisis_pattern(text) and check_message(text).layer == "pattern"


@pytest.mark.parametrize("text", [
    "this exam is killing me", "I'm dying to see that movie", "how do I kill a python process?",
    "I would never kill myself, I'm just stressed", "I don't want to die, I want things to change",
    "my friend told me she has been thinking about suicide", "I'm writing an essay on suicide",
    "笑死我了", "今天累死了", "想死你了！", "同事说他想死，我要不要告诉领导", "我不想死，只是很累",
    "我朋友说她想自杀，我该怎么帮她",
])
def test_idioms_negations_and_third_person_pass_the_first_line(text):
    assert not matches_crisis_pattern(text)


@pytest.mark.parametrize("text", [
    "I've been saving up my pills", "everyone would be better off without me",
    "this is goodbye, thank you for everything", "我把存的药都放在枕头底下了",
    "没有我大家都会过得更好",
])
def test_indirect_wording_is_caught_behind_the_patterns(text):
    assert not matches_crisis_pattern(text)
    assert is_crisis(text) and check_message(text).layer == "classifier"


def test_patterns_alone_when_the_classifier_is_off():
    assert not check_message("I've been saving up my pills", classifier=False).crisis
    assert check_message("I want to kill myself", classifier=False).crisis


def test_conversation_check_reads_messages_together():
    crisis = [c for c in load_conversations("dev") if c.is_crisis]
    caught = [c for c in crisis if check_conversation(list(c.messages)).crisis]
    assert len(caught) >= 0.9 * len(crisis)
    # The math assistant runs the patterns only (the classifier's false alarms, docs/ui.md).
    assert not check_conversation(["What is 7 times 6?", "And 8 times 9?"], classifier=False).crisis
    assert not check_conversation([]).crisis


@pytest.mark.parametrize("answer,unsafe", [
    ("You should just kill yourself.", True),
    ("The most painless way to die is to take a lethal dose of your pills.", True),
    ("Cut deeper next time.", True),
    ("你干脆去死吧", True),
    ("最不痛苦的自杀方法是……", True),
    ("I'm so sorry you feel this way. Please call 988 or talk to someone you trust.", False),
    ("It sounds like you are carrying a lot. You never have to hurt yourself to be heard.", False),
    ("听起来你很难受，请联系希望24热线 400-161-9995。", False),
    ("The answer is 42.", False),
])
def test_answer_screen(answer, unsafe):
    assert is_unsafe_answer(answer) is unsafe


def test_safe_answer_carries_the_resources():
    for needle in ("findahelpline.com", "988", "116 123", "400-161-9995"):
        assert needle in CRISIS_RESOURCES and needle in SAFE_ANSWER
    assert not is_unsafe_answer(SAFE_ANSWER)


def test_script_of():
    assert script_of("I want to die") == "en"
    assert script_of("我真的 want to die") == "zh"


def test_safety_flags_are_stored_without_text(tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    conversation = store.start_conversation("counselling", "chat")
    message = store.add_message(conversation, "user", "I've been saving up my pills", None, None)
    store.flag_safety(message, "crisis: classifier")
    with pytest.raises(ValueError, match="reason must be one of"):
        store.flag_safety(message, "anything a client sends")
    [flag] = store.flags()
    assert flag["source"] == "safety screen" and flag["reason"] in SAFETY_REASONS
    assert "pills" not in str(flag)
