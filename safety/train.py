"""Fit the classifier on the train split and choose everything on the dev split.

Choices, all on dev: the feature set (Gemma 3 270M hidden states of some layers, or
character n-grams of some range) and the regularisation, by the lowest false-alarm rate, in
the worse language, at which every language keeps the target recall; then the thresholds
(the highest that keep the target recall in each language). The test split is not read here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from qtune.safety.classifier import (
    CrisisModel,
    EncoderFeatures,
    Features,
    encoder_states,
    fit,
    fit_states,
)
from qtune.safety.dataset import Message, load_messages, training_data_hash

#: The recall the screen promises; the threshold is set to reach it on dev in each language.
TARGET_RECALL = 0.95
NGRAM_RANGES = ((1, 3), (1, 4), (2, 4))
C_VALUES = (3.0, 10.0, 30.0)
#: Hidden-state candidates: which layers are pooled (at most encoder.KEPT_LAYERS deep),
#: and the regularisation (per standardised feature, so much smaller than the n-grams').
ENCODER_LAYER_SETS = ((4,), (6,), (9,), (4, 6), (6, 9), (4, 6, 9))
ENCODER_C_VALUES = (0.01, 0.03, 0.1, 0.3)
#: Languages the targets apply to; mixed messages are scored too but are too few to tune on.
TUNED_LANGS = ("en", "zh")


@dataclass(frozen=True)
class Candidate:
    features: Features | EncoderFeatures
    c: float
    thresholds: dict[str, float]
    false_alarms: float  # on dev at that threshold, in the worse of the tuned languages


def threshold_for_recall(scores: np.ndarray, crisis: np.ndarray, recall: float) -> float:
    """A threshold whose recall on these crisis messages is at least ``recall``: halfway
    between the lowest score it must keep and the next score below (of either label), so
    every decision on these messages is the highest such threshold's, yet a last-digit
    difference in the features (another CPU's arithmetic) cannot flip the boundary one."""
    positives = np.sort(scores[crisis])[::-1]
    needed = int(np.ceil(recall * len(positives)))
    boundary = positives[needed - 1]
    below = scores[scores < boundary]
    return float((boundary + below.max()) / 2 if below.size else boundary)


def _choose_thresholds(scores: np.ndarray, dev: list[Message]) -> tuple[dict[str, float], float]:
    """Per language, the threshold that keeps the target recall; and the worse language's
    false-alarm rate at it."""
    crisis = np.array([m.is_crisis for m in dev])
    langs = np.array([m.lang for m in dev])
    thresholds = {lang: threshold_for_recall(scores[langs == lang], crisis[langs == lang],
                                             TARGET_RECALL) for lang in TUNED_LANGS}
    worst = max(float(np.mean(scores[~crisis & (langs == lang)] >= thresholds[lang]))
                for lang in TUNED_LANGS)
    return thresholds, worst


def _fitted(train: list[Message], dev: list[Message],
            encoder: bool) -> Iterator[tuple[CrisisModel, float, np.ndarray]]:
    """Every candidate fitted on train: (model, C, its dev probabilities)."""
    texts, labels = [m.text for m in train], [m.is_crisis for m in train]
    dev_texts = [m.text for m in dev]
    for low, high in NGRAM_RANGES:
        features = Features(ngram_min=low, ngram_max=high)
        for c in C_VALUES:
            model = fit(texts, labels, features, c)
            yield model, c, model.probabilities(dev_texts)
    if not encoder:
        return
    for group, chosen in encoder_states(texts + dev_texts, ENCODER_LAYER_SETS).items():
        features = EncoderFeatures(group)
        for c in ENCODER_C_VALUES:
            model = fit_states(chosen[:len(texts)], labels, features, c)
            yield model, c, model.probabilities_of(chosen[len(texts):])


def train(encoder: bool = True) -> tuple[CrisisModel, list[Candidate]]:
    """The best candidate on dev (``encoder=False``: n-grams only), and every candidate."""
    train_rows, dev_rows = load_messages("train"), load_messages("dev")
    found, best = [], None
    for model, c, dev_scores in _fitted(train_rows, dev_rows, encoder):
        thresholds, false_alarms = _choose_thresholds(dev_scores, dev_rows)
        found.append(Candidate(model.features, c, thresholds, false_alarms))
        if best is None or false_alarms < best[1]:
            model.thresholds = thresholds
            best = (model, false_alarms)
    model = best[0]
    model.data_hash = training_data_hash()
    return model, found
