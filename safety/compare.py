"""`qtune safety compare`: the measurement behind the choice of features, on dev only.

Character n-grams against hidden states (mean over tokens of one layer or several,
standardised, logistic regression) of the embedded SmolLM2-135M and of Gemma 3 270M (the
shipped encoder): ROC AUC and the false alarms left when the threshold keeps 95% recall,
per language.
"""

from __future__ import annotations

import numpy as np
from qtune.safety.classifier import EncoderFeatures, Features, encoder_states, fit
from qtune.safety.dataset import load_messages
from qtune.safety.train import NGRAM_RANGES, TARGET_RECALL, TUNED_LANGS, threshold_for_recall

HIDDEN_LAYERS = (8, 16, 24)
#: Gemma 3 270M layer sets measured (the shipped one is chosen by `qtune safety train`).
ENCODER_LAYER_SETS = ((4,), (6,), (9,), (6, 9))
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
    for lang in TUNED_LANGS:
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
                                            for lang in TUNED_LANGS}
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


def _ngram_scores(texts: list[str], labels: list[bool], dev_texts: list[str],
                  features: Features) -> np.ndarray:
    return fit(texts, labels, features, c=10.0).probabilities(dev_texts)


def _hidden_state_scores(train: np.ndarray, labels: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """Standardised hidden states, a balanced logistic regression; dev decision values."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    regression = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced")
    regression.fit(scaler.transform(train), labels)
    return regression.decision_function(scaler.transform(dev))


def compare(curve: bool = False) -> dict[str, dict[str, str]]:
    train, dev = load_messages("train"), load_messages("dev")
    texts, dev_texts = [m.text for m in train], [m.text for m in dev]
    labels = np.array([m.is_crisis for m in train])
    crisis = np.array([m.is_crisis for m in dev])
    langs = np.array([m.lang for m in dev])
    rows = {}
    for low, high in NGRAM_RANGES:
        scores = _ngram_scores(texts, list(labels), dev_texts, Features(low, high))
        rows[f"char {low}-{high}-grams"] = _summary(scores, crisis, langs)
    features = hidden_states(texts + dev_texts, HIDDEN_LAYERS)
    for layer, matrix in features.items():
        scores = _hidden_state_scores(matrix[:len(train)], labels, matrix[len(train):])
        rows[f"SmolLM2-135M hidden states, layer {layer}"] = _summary(scores, crisis, langs)
    gemma = encoder_states(texts + dev_texts, ENCODER_LAYER_SETS)
    for group, matrix in gemma.items():
        scores = _hidden_state_scores(matrix[:len(train)], labels, matrix[len(train):])
        rows[EncoderFeatures(group).describe()] = _summary(scores, crisis, langs)
    if curve:
        rows |= _curves(texts, labels, dev_texts, {
            "SmolLM2-135M hidden states, layer 16": features[16],
            EncoderFeatures((6, 9)).describe(): gemma[(6, 9)]}, crisis, langs)
    return rows


def _curves(texts: list[str], labels: np.ndarray, dev_texts: list[str],
            hidden: dict[str, np.ndarray], crisis: np.ndarray,
            langs: np.ndarray) -> dict[str, dict[str, str]]:
    """Learning curves of n-grams (1-4) and of each named matrix of hidden states
    (train rows, then dev rows)."""
    n_train = len(texts)

    def ngrams(rows: np.ndarray) -> np.ndarray:
        return _ngram_scores([texts[i] for i in rows], list(labels[rows]), dev_texts,
                             Features(1, 4))

    def states(matrix: np.ndarray):
        return lambda rows: _hidden_state_scores(matrix[rows], labels[rows], matrix[n_train:])

    found = {}
    candidates = [("char 1-4-grams", ngrams)] + [(name, states(m)) for name, m in hidden.items()]
    for name, fit_and_score in candidates:
        for part, rates in learning_curve(fit_and_score, n_train, crisis, langs).items():
            found[f"{name}, {part}"] = rates
    return found
