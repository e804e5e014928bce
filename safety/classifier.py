"""The second line: character n-grams and a logistic regression, stored without pickle.

Why character n-grams: they need no tokenizer, so English, Chinese (where a character is
already a word), mixed messages, misspellings ("sucide", "kil myself") and slang share one
feature space; fitting takes a second and scoring well under a millisecond on 2 cores.
``qtune safety compare`` measures the alternative the issue suggests (the embedded
model's hidden states) on the dev split; the result is in docs/ui.md.

The hashed n-gram space (scikit-learn's ``HashingVectorizer``) needs no vocabulary file,
so the model file holds only the non-zero weights, the intercept, the decision threshold
and the settings, in a plain ``.npz`` that numpy loads without executing code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

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
    """How a message becomes a vector (fixed at training, stored with the model)."""

    ngram_min: int = 1
    ngram_max: int = 4
    n_features: int = 2**20

    def vectorizer(self):
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(analyzer="char", ngram_range=(self.ngram_min, self.ngram_max),
                                 n_features=self.n_features, alternate_sign=False,
                                 norm="l2", preprocessor=normalise)


@dataclass
class CrisisModel:
    features: Features
    indices: np.ndarray  # feature indices with a non-zero weight
    weights: np.ndarray
    intercept: float
    thresholds: dict[str, float]  # per script ("en", "zh"), on the probability; set on dev
    data_hash: str  # which train + dev rows it came from (safety.dataset)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        matrix = self.features.vectorizer().transform(texts)[:, self.indices]
        logits = matrix @ self.weights + self.intercept
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
                            **{f"features_{k}": v for k, v in asdict(self.features).items()})

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> CrisisModel:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: rebuild it with `qtune safety train`")
        with np.load(path, allow_pickle=False) as stored:
            features = Features(**{k.removeprefix("features_"): int(stored[k])
                                   for k in stored.files if k.startswith("features_")})
            thresholds = {k.removeprefix("threshold_"): float(stored[k])
                          for k in stored.files if k.startswith("threshold_")}
            return cls(features, stored["indices"], stored["weights"].astype(np.float64),
                       float(stored["intercept"]), thresholds, str(stored["data_hash"]))


def fit(texts: list[str], labels: list[bool], features: Features, c: float,
        data_hash: str = "") -> CrisisModel:
    """Fit on the given messages; the threshold is set later on the dev split."""
    from sklearn.linear_model import LogisticRegression

    matrix = features.vectorizer().transform(texts)
    regression = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    regression.fit(matrix, np.asarray(labels, dtype=int))
    coef = regression.coef_.ravel()
    indices = np.flatnonzero(coef)
    return CrisisModel(features, indices, coef[indices], float(regression.intercept_[0]),
                       {script: 0.5 for script in SCRIPTS}, data_hash)
