"""Leaderboard maths: win rates and Bradley–Terry ratings on the Elo scale (pure computation).

Follows Chatbot Arena's ``compute_mle_elo``: the Bradley–Terry model says model *i* beats
model *j* with probability ``1 / (1 + BASE ** ((R_j - R_i) / SCALE))``; the ratings are the
maximum-likelihood fit of a logistic regression on the pairwise outcomes, a tie counting as
half a win for each side. Ratings are shifted so that their mean is ``INIT_RATING``. A tiny
L2 penalty (``l2``) keeps them finite when a model has never lost (Arena relies on the
solver's tolerance for that); pass ``l2=0`` for the plain MLE.

Confidence intervals come from the bootstrap: resample the votes with replacement, refit,
and take the 2.5 and 97.5 percentiles of each model's rating.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

SCALE = 400.0
BASE = 10.0
INIT_RATING = 1000.0
DEFAULT_L2 = 1e-4

#: Outcome label -> score of model_a (Chatbot Arena's labels).
SCORE_A = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}


@dataclass(frozen=True)
class Battle:
    model_a: str
    model_b: str
    winner: str


@dataclass
class Standing:
    model: str
    rating: float
    ci_low: float
    ci_high: float
    votes: int
    wins: int
    losses: int
    ties: int

    @property
    def win_rate(self) -> float:
        """Share of a model's battles it won, ties counted as half."""
        return (self.wins + 0.5 * self.ties) / self.votes if self.votes else float("nan")


#: Words by which an answer gives away which model wrote it (besides the served names).
IDENTITY_WORDS = ("smollm", "smollm2", "qwth", "lora", "hugging face", "huggingface")


def answer_names_model(answer: str, model_names: Iterable[str]) -> bool:
    """True when an answer names a model ("I am SmolLM2…", "as math-qwth…"): a vote on it
    is not blind in effect."""
    words = {*IDENTITY_WORDS, *(name.lower() for name in model_names if name)}
    pattern = r"(?<![\w-])(" + "|".join(re.escape(word) for word in words) + r")(?![\w-])"
    return re.search(pattern, answer.lower()) is not None


def blind_votes(votes: Iterable[Mapping]) -> list[Mapping]:
    """The votes cast without seeing the models' names, and whose answers did not name
    them either. Named votes are biased by the names (and by whoever prefers a label), so
    the leaderboard counts blind votes only; the others are kept."""
    return [v for v in votes if v.get("blind", True) and not v.get("names_model", False)]


def battles_from_votes(votes: Iterable[Mapping]) -> list[Battle]:
    """Keep the fields the leaderboard needs; skip votes with an unknown winner or a model
    compared with itself (they carry no information)."""
    return [
        Battle(v["model_a"], v["model_b"], v["winner"])
        for v in votes
        if v["winner"] in SCORE_A and v["model_a"] != v["model_b"]
    ]


def _pair_scores(battles: list[Battle], index: dict[str, int]) -> tuple[np.ndarray, ...]:
    """Aggregate battles into (i, j, score of i, count) per ordered pair seen."""
    totals: dict[tuple[int, int], list[float]] = {}
    for battle in battles:
        key = (index[battle.model_a], index[battle.model_b])
        entry = totals.setdefault(key, [0.0, 0.0])
        entry[0] += SCORE_A[battle.winner]
        entry[1] += 1.0
    pairs = np.array(list(totals), dtype=int).reshape(-1, 2)
    scores = np.array([v[0] for v in totals.values()])
    counts = np.array([v[1] for v in totals.values()])
    return pairs[:, 0], pairs[:, 1], scores, counts


def fit_ratings(
    battles: list[Battle], models: list[str] | None = None, l2: float = DEFAULT_L2
) -> dict[str, float]:
    """Bradley–Terry ratings (Elo scale, mean ``INIT_RATING``) by maximum likelihood."""
    models = models or sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    index = {model: k for k, model in enumerate(models)}
    if len(models) < 2 or not battles:
        return {model: INIT_RATING for model in models}
    i, j, scores, counts = _pair_scores(battles, index)

    def loss_and_grad(beta: np.ndarray) -> tuple[float, np.ndarray]:
        # beta in natural-log units: P(i beats j) = sigmoid(beta_i - beta_j).
        margin = beta[i] - beta[j]
        log_p = -np.logaddexp(0.0, -margin)
        log_q = -np.logaddexp(0.0, margin)
        loss = -(scores * log_p + (counts - scores) * log_q).sum() + 0.5 * l2 * beta @ beta
        residual = counts / (1.0 + np.exp(-margin)) - scores  # d loss / d margin
        grad = l2 * beta
        np.add.at(grad, i, residual)
        np.add.at(grad, j, -residual)
        return float(loss), grad

    result = minimize(
        loss_and_grad, np.zeros(len(models)), jac=True, method="L-BFGS-B",
        options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 1000},
    )
    beta = result.x - result.x.mean()
    elo = INIT_RATING + SCALE / math.log(BASE) * beta
    return dict(zip(models, elo.tolist(), strict=True))


def bootstrap_ratings(
    battles: list[Battle],
    models: list[str],
    rounds: int = 200,
    seed: int = 0,
    l2: float = DEFAULT_L2,
) -> np.ndarray:
    """Ratings refitted on ``rounds`` resamples of the votes: array (rounds, len(models))."""
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, len(models)))
    for r in range(rounds):
        picks = rng.integers(0, len(battles), len(battles))
        ratings = fit_ratings([battles[k] for k in picks], models, l2)
        samples[r] = [ratings[m] for m in models]
    return samples


def leaderboard(
    votes: Iterable[Mapping], rounds: int = 200, seed: int = 0, l2: float = DEFAULT_L2
) -> list[Standing]:
    """Standings sorted by rating, with bootstrap 95% intervals and win/loss/tie counts."""
    battles = battles_from_votes(votes)
    models = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    if not models:
        return []
    ratings = fit_ratings(battles, models, l2)
    samples = bootstrap_ratings(battles, models, rounds, seed, l2)
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    standings = []
    for k, model in enumerate(models):
        wins = losses = ties = 0
        for battle in battles:
            if model not in (battle.model_a, battle.model_b):
                continue
            score = SCORE_A[battle.winner]
            score = score if battle.model_a == model else 1.0 - score
            wins += score == 1.0
            losses += score == 0.0
            ties += score == 0.5
        standings.append(
            Standing(model, ratings[model], float(low[k]), float(high[k]),
                     wins + losses + ties, wins, losses, ties)
        )
    return sorted(standings, key=lambda s: s.rating, reverse=True)


def win_rate_matrix(votes: Iterable[Mapping]) -> tuple[list[str], np.ndarray]:
    """Row model's share of wins (ties half) against the column model; NaN where never met."""
    models, won, met = pairwise_outcomes(votes)
    return models, win_rates(won, met)


def win_rates(won: np.ndarray, met: np.ndarray) -> np.ndarray:
    """Wins divided by battles, NaN where two models never met."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(met > 0, won / np.maximum(met, 1), np.nan)


def pairwise_outcomes(votes: Iterable[Mapping]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Models, row's wins against column (ties half), and battles between each pair."""
    battles = battles_from_votes(votes)
    models = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    index = {m: k for k, m in enumerate(models)}
    won = np.zeros((len(models), len(models)))
    met = np.zeros_like(won)
    for battle in battles:
        a, b = index[battle.model_a], index[battle.model_b]
        score = SCORE_A[battle.winner]
        won[a, b] += score
        won[b, a] += 1.0 - score
        met[a, b] += 1
        met[b, a] += 1
    return models, won, met
