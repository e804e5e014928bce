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


def _summary(scores: np.ndarray, crisis: np.ndarray, langs: np.ndarray) -> dict[str, str]:
    from sklearn.metrics import roc_auc_score

    out = {}
    for lang in ("en", "zh"):
        mask = langs == lang
        threshold = threshold_for_recall(scores[mask], crisis[mask], TARGET_RECALL)
        false_alarms = np.mean(scores[mask][~crisis[mask]] >= threshold)
        out[lang] = f"AUC {roc_auc_score(crisis[mask], scores[mask]):.3f}, " \
                    f"false alarms {false_alarms:.0%}"
    return out


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


def compare() -> dict[str, dict[str, str]]:
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
    return rows
