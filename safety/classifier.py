"""The second line: a logistic regression on one of two feature sets, stored without pickle.

- ``EncoderFeatures``: mean-pooled hidden states of a few layers of Gemma 3 270M
  (safety/encoder.py), the shipped choice: on the dev split they leave far fewer false
  alarms at 95% recall than n-grams, in both languages (docs/ui.md).
- ``Features``: character n-grams, hashed (scikit-learn's ``HashingVectorizer``): no
  tokenizer and no model, ~1 ms; English, Chinese, mixed messages and misspellings share
  one space. Kept as the measured alternative.

Either way the model is linear in its features (the standardisation of hidden states is
folded into the weights), so the file holds only the non-zero weights, the intercept, the
thresholds and the settings, in a plain ``.npz`` that numpy loads without executing code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
from qtune.safety.patterns import normalise

MODEL_FILE = Path(__file__).parent / "crisis_model.npz"
#: Each script gets its own threshold: the two languages' scores are not on one scale.
SCRIPTS = ("en", "zh")


def script_of(text: str) -> str:
    """"zh" for a message with any CJK character (Chinese or mixed), else "en"."""
    return "zh" if any("\u3400" <= ch <= "\u9fff" for ch in text) else "en"


@dataclass(frozen=True)
class Features:
    """Character n-grams: how a message becomes a vector (stored with the model)."""

    kind: ClassVar[str] = "ngrams"
    ngram_min: int = 1
    ngram_max: int = 4
    n_features: int = 2**20

    def describe(self) -> str:
        return f"char {self.ngram_min}-{self.ngram_max}-grams"

    def transform(self, texts: list[str]):
        return self.vectorizer().transform(texts)

    def vectorizer(self):
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(analyzer="char", ngram_range=(self.ngram_min, self.ngram_max),
                                 n_features=self.n_features, alternate_sign=False,
                                 norm="l2", preprocessor=normalise)


@dataclass(frozen=True)
class EncoderFeatures:
    """Gemma 3 270M hidden states of these layers, mean-pooled and concatenated."""

    kind: ClassVar[str] = "encoder"
    layers: tuple[int, ...] = (6, 9)

    def describe(self) -> str:
        noun = "layer" if len(self.layers) == 1 else "layers"
        return f"Gemma 3 270M hidden states, {noun} {'+'.join(map(str, self.layers))}"

    def transform(self, texts: list[str]) -> np.ndarray:
        from qtune.safety.encoder import encoder

        return self.select(encoder().embed(texts, self.layers))

    def select(self, states: dict[int, np.ndarray]) -> np.ndarray:
        """This set's layers, side by side, from pooled states of (at least) these layers."""
        return np.concatenate([states[layer] for layer in self.layers], axis=1)


def encoder_states(texts: list[str],
                   layer_sets: tuple[tuple[int, ...], ...]) -> dict[tuple[int, ...], np.ndarray]:
    """Each layer set's features for ``texts``, with one encoder pass for all of them."""
    from qtune.safety.encoder import encoder

    layers = tuple(sorted({layer for group in layer_sets for layer in group}))
    states = encoder().embed(texts, layers)
    return {group: EncoderFeatures(group).select(states) for group in layer_sets}


FEATURE_KINDS = {kind.kind: kind for kind in (Features, EncoderFeatures)}


@dataclass
class CrisisModel:
    features: Features | EncoderFeatures
    indices: np.ndarray  # feature indices with a non-zero weight
    weights: np.ndarray
    intercept: float
    thresholds: dict[str, float]  # per script ("en", "zh"), on the probability; set on dev
    data_hash: str  # which train + dev rows it came from (safety.dataset)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return self.probabilities_of(self.features.transform(texts))

    def probabilities_of(self, matrix) -> np.ndarray:
        """Scores of messages already turned into features (``features.transform``)."""
        logits = matrix[:, self.indices] @ self.weights + self.intercept
        return 1.0 / (1.0 + np.exp(-np.asarray(logits).ravel()))

    def flags(self, texts: list[str]) -> np.ndarray:
        limits = np.array([self.thresholds[script_of(text)] for text in texts])
        return self.probabilities(texts) >= limits

    def save(self, path: Path = MODEL_FILE) -> None:
        np.savez_compressed(path, indices=self.indices.astype(np.int32),
                            weights=self.weights.astype(np.float64),
                            intercept=np.float64(self.intercept),
                            **{f"threshold_{k}": np.float64(v) for k, v in self.thresholds.items()},
                            data_hash=np.str_(self.data_hash),
                            features_kind=np.str_(self.features.kind),
                            **{f"features_{k}": np.asarray(v)
                               for k, v in asdict(self.features).items()})

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> CrisisModel:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: rebuild it with `qtune safety train`")
        with np.load(path, allow_pickle=False) as stored:
            features = _stored_features(stored)
            thresholds = {k.removeprefix("threshold_"): float(stored[k])
                          for k in stored.files if k.startswith("threshold_")}
            return cls(features, stored["indices"], stored["weights"].astype(np.float64),
                       float(stored["intercept"]), thresholds, str(stored["data_hash"]))


def _stored_features(stored) -> Features | EncoderFeatures:
    kind = FEATURE_KINDS[str(stored["features_kind"])] if "features_kind" in stored.files \
        else Features  # files written before the encoder existed
    values = {}
    for field in fields(kind):
        value = stored[f"features_{field.name}"]
        values[field.name] = tuple(int(v) for v in value) if value.ndim else int(value)
    return kind(**values)


def _linear_model(features: Features | EncoderFeatures, coef: np.ndarray, intercept: float,
                  data_hash: str) -> CrisisModel:
    indices = np.flatnonzero(coef)
    return CrisisModel(features, indices, coef[indices], float(intercept),
                       {script: 0.5 for script in SCRIPTS}, data_hash)


def fit(texts: list[str], labels: list[bool], features: Features, c: float,
        data_hash: str = "") -> CrisisModel:
    """Fit n-grams on the given messages; the threshold is set later on the dev split."""
    from sklearn.linear_model import LogisticRegression

    matrix = features.vectorizer().transform(texts)
    regression = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    regression.fit(matrix, np.asarray(labels, dtype=int))
    return _linear_model(features, regression.coef_.ravel(), regression.intercept_[0], data_hash)


def fit_states(states: np.ndarray, labels: list[bool], features: EncoderFeatures, c: float,
               data_hash: str = "") -> CrisisModel:
    """Fit on hidden states already computed (``features.transform`` of the messages):
    standardised, then a balanced logistic regression, the scaling folded into the weights."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(states)
    regression = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    regression.fit(scaler.transform(states), np.asarray(labels, dtype=int))
    coef = regression.coef_.ravel() / scaler.scale_
    intercept = regression.intercept_[0] - float(coef @ scaler.mean_)
    return _linear_model(features, coef, intercept, data_hash)
