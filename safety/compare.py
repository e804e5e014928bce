"""`qtune safety compare`: the measurement behind the choice of features, on dev only.

Character n-grams (the shipped classifier) against the embedded model's hidden states
(mean over tokens of one layer, standardised, logistic regression): ROC AUC and the false
alarms left when the threshold keeps 95% recall, per language.
"""

from __future__ import annotations

import numpy as np
from qtune.safety.classifier import Features, fit
from qtune.safety.dataset import load_messages
from qtune.safety.train import NGRAM_RANGES, TARGET_RECALL, threshold_for_recall

HIDDEN_LAYERS = (8, 16, 24)
#: Parts of the train split for the learning curve (random subsets, several draws each):
#: how fast false alarms fall with more messages of this kind says how far more data goes.
CURVE_FRACTIONS = (0.25, 0.5, 1.0)
CURVE_DRAWS = 5


def _summary(scores: np.ndarray, crisis: np.ndarray, langs: np.ndarray) -> dict[str, str]:
    from sklearn.metrics import roc_auc_score

    rates = false_alarm_rates(scores, crisis, langs)
    return {lang: f"AUC {roc_auc_score(crisis[langs == lang], scores[langs == lang]):.3f}, "
                  f"false alarms {rates[lang]:.0%}" for lang in rates}


def false_alarm_rates(scores: np.ndarray, crisis: np.ndarray, langs: np.ndarray) -> dict[str, float]:
    """Per language, the share of safe messages flagged at the threshold keeping 95% recall."""
    rates = {}
    for lang in ("en", "zh"):
        mask = langs == lang
        threshold = threshold_for_recall(scores[mask], crisis[mask], TARGET_RECALL)
        rates[lang] = float(np.mean(scores[mask][~crisis[mask]] >= threshold))
    return rates


def learning_curve(fit_and_score, n_train: int, crisis: np.ndarray,
                   langs: np.ndarray) -> dict[str, dict[str, str]]:
    """``fit_and_score(train_indices) -> dev scores``; the mean dev false-alarm rate at 95%
    recall when fitting on each fraction of the train split."""
    rng = np.random.default_rng(0)
    rows = {}
    for fraction in CURVE_FRACTIONS:
        draws = 1 if fraction == 1.0 else CURVE_DRAWS
        rates = [false_alarm_rates(fit_and_score(np.sort(rng.choice(
                     n_train, int(fraction * n_train), replace=False))), crisis, langs)
                 for _ in range(draws)]
        rows[f"{fraction:.0%} of train"] = {lang: f"false alarms {np.mean([r[lang] for r in rates]):.0%}"
                                            for lang in ("en", "zh")}
    return rows


def hidden_states(texts: list[str], layers: tuple[int, ...]) -> dict[int, np.ndarray]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qtune.model import resolve_model

    path = resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    pooled: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    with torch.inference_mode():
        for start in range(0, len(texts), 32):
            batch = tokenizer(texts[start:start + 32], return_tensors="pt", padding=True)
            hidden = model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].unsqueeze(-1).float()
            for layer in layers:
                pooled[layer].append(((hidden[layer] * mask).sum(1) / mask.sum(1)).numpy())
    return {layer: np.concatenate(parts) for layer, parts in pooled.items()}


def compare(curve: bool = False) -> dict[str, dict[str, str]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train, dev = load_messages("train"), load_messages("dev")
    crisis = np.array([m.is_crisis for m in dev])
    langs = np.array([m.lang for m in dev])
    rows = {}
    for low, high in NGRAM_RANGES:
        model = fit([m.text for m in train], [m.is_crisis for m in train],
                    Features(low, high), c=10.0)
        rows[f"char {low}-{high}-grams"] = _summary(
            model.probabilities([m.text for m in dev]), crisis, langs)
    features = hidden_states([m.text for m in train + dev], HIDDEN_LAYERS)
    labels = [m.is_crisis for m in train]
    for layer, matrix in features.items():
        scaler = StandardScaler().fit(matrix[:len(train)])
        regression = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced")
        regression.fit(scaler.transform(matrix[:len(train)]), labels)
        scores = regression.decision_function(scaler.transform(matrix[len(train):]))
        rows[f"hidden states, layer {layer}"] = _summary(scores, crisis, langs)
    if curve:
        rows |= _curves(train, dev, features[16], crisis, langs)
    return rows


def _curves(train, dev, hidden: np.ndarray, crisis: np.ndarray,
            langs: np.ndarray) -> dict[str, dict[str, str]]:
    """Learning curves of the shipped n-grams (1-4, C=10) and of layer-16 hidden states."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    texts, labels = [m.text for m in train], np.array([m.is_crisis for m in train])
    dev_texts = [m.text for m in dev]

    def ngrams(rows: np.ndarray) -> np.ndarray:
        model = fit([texts[i] for i in rows], list(labels[rows]), Features(1, 4), c=10.0)
        return model.probabilities(dev_texts)

    def states(rows: np.ndarray) -> np.ndarray:
        scaler = StandardScaler().fit(hidden[rows])
        regression = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced")
        regression.fit(scaler.transform(hidden[rows]), labels[rows])
        return regression.decision_function(scaler.transform(hidden[len(train):]))

    found = {}
    for name, fit_and_score in (("char 1-4-grams", ngrams), ("hidden states, layer 16", states)):
        for part, rates in learning_curve(fit_and_score, len(train), crisis, langs).items():
            found[f"{name}, {part}"] = rates
    return found
