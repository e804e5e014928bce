"""Fit the classifier on the train split and choose everything on the dev split.

Choices, all on dev: the n-gram range and the regularisation (by the lowest false-alarm
rate, in the worse language, at which every language keeps the target recall), then the threshold (the highest
that keeps the target recall in each language). The test split is not read here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtune.safety.classifier import CrisisModel, Features, fit
from qtune.safety.dataset import Message, load_messages, training_data_hash

#: The issue's target; the threshold is set to reach it on dev in each language.
TARGET_RECALL = 0.95
NGRAM_RANGES = ((1, 3), (1, 4), (2, 4))
C_VALUES = (3.0, 10.0, 30.0)
#: Languages the targets apply to; mixed messages are scored too but are too few to tune on.
TUNED_LANGS = ("en", "zh")


@dataclass(frozen=True)
class Candidate:
    features: Features
    c: float
    thresholds: dict[str, float]
    false_alarms: float  # on dev at that threshold, in the worse of the tuned languages


def threshold_for_recall(scores: np.ndarray, crisis: np.ndarray, recall: float) -> float:
    """The highest threshold whose recall on these crisis messages is at least ``recall``."""
    positives = np.sort(scores[crisis])[::-1]
    needed = int(np.ceil(recall * len(positives)))
    return float(positives[needed - 1])


def _choose_thresholds(model: CrisisModel, dev: list[Message]) -> tuple[dict[str, float], float]:
    """Per language, the threshold that keeps the target recall; and the worse language's
    false-alarm rate at it."""
    scores = model.probabilities([m.text for m in dev])
    crisis = np.array([m.is_crisis for m in dev])
    langs = np.array([m.lang for m in dev])
    thresholds = {lang: threshold_for_recall(scores[langs == lang], crisis[langs == lang],
                                             TARGET_RECALL) for lang in TUNED_LANGS}
    worst = max(float(np.mean(scores[~crisis & (langs == lang)] >= thresholds[lang]))
                for lang in TUNED_LANGS)
    return thresholds, worst


def candidates(train: list[Message], dev: list[Message]) -> list[Candidate]:
    texts, labels = [m.text for m in train], [m.is_crisis for m in train]
    found = []
    for low, high in NGRAM_RANGES:
        features = Features(ngram_min=low, ngram_max=high)
        for c in C_VALUES:
            thresholds, false_alarms = _choose_thresholds(fit(texts, labels, features, c), dev)
            found.append(Candidate(features, c, thresholds, false_alarms))
    return found


def train() -> tuple[CrisisModel, list[Candidate]]:
    train_rows, dev_rows = load_messages("train"), load_messages("dev")
    found = candidates(train_rows, dev_rows)
    best = min(found, key=lambda c: c.false_alarms)
    model = fit([m.text for m in train_rows], [m.is_crisis for m in train_rows],
                best.features, best.c, training_data_hash())
    model.thresholds = best.thresholds
    return model, found
