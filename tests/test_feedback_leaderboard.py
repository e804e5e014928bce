"""Leaderboard maths against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qtune.feedback.leaderboard import (
    Battle,
    battles_from_votes,
    fit_ratings,
    leaderboard,
    win_rate_matrix,
)


def votes_from(counts: dict[tuple[str, str, str], int]) -> list[dict]:
    return [
        {"model_a": a, "model_b": b, "winner": w}
        for (a, b, w), n in counts.items()
        for _ in range(n)
    ]


def hunter_mm(votes: list[dict], models: list[str], iterations: int = 5000) -> dict[str, float]:
    """Bradley–Terry strengths by Hunter's (2004) MM iteration, ties as half wins, on the
    Elo scale with mean 1000: an algorithm independent of the logistic-regression fit."""
    k = {m: n for n, m in enumerate(models)}
    wins = np.zeros(len(models))
    games = np.zeros((len(models), len(models)))
    for vote in votes:
        a, b = k[vote["model_a"]], k[vote["model_b"]]
        score = {"model_a": 1.0, "model_b": 0.0}.get(vote["winner"], 0.5)
        wins[a] += score
        wins[b] += 1 - score
        games[a, b] += 1
        games[b, a] += 1
    gamma = np.ones(len(models))
    for _ in range(iterations):
        denominator = (games / (gamma[:, None] + gamma[None, :])).sum(axis=1)
        gamma = wins / denominator
        gamma /= np.exp(np.log(gamma).mean())
    elo = 400 * np.log10(gamma)
    elo += 1000 - elo.mean()
    return dict(zip(models, elo, strict=True))


def test_two_models_closed_form():
    votes = votes_from({("q", "l", "model_a"): 5, ("l", "q", "model_b"): 2,
                        ("q", "l", "model_b"): 2, ("q", "l", "tie"): 1})
    ratings = fit_ratings(battles_from_votes(votes), l2=0.0)
    share = 7.5 / 10  # q's wins, the tie counted half
    gap = 400 * math.log10(share / (1 - share))
    assert ratings["q"] - ratings["l"] == pytest.approx(gap, abs=1e-3)
    assert (ratings["q"] + ratings["l"]) / 2 == pytest.approx(1000)


def test_three_models_match_mm_iteration():
    votes = votes_from({
        ("a", "b", "model_a"): 6, ("a", "b", "model_b"): 3, ("a", "b", "tie"): 2,
        ("b", "c", "model_a"): 5, ("c", "b", "model_a"): 4, ("b", "c", "tie (bothbad)"): 1,
        ("a", "c", "model_a"): 7, ("c", "a", "model_a"): 2,
    })
    expected = hunter_mm(votes, ["a", "b", "c"])
    ratings = fit_ratings(battles_from_votes(votes), l2=0.0)
    for model in "abc":
        assert ratings[model] == pytest.approx(expected[model], abs=0.01)
    assert ratings["a"] > ratings["b"] > ratings["c"]
    # the default tiny penalty barely moves well-determined ratings
    penalised = fit_ratings(battles_from_votes(votes))
    for model in "abc":
        assert penalised[model] == pytest.approx(expected[model], abs=1.0)


def test_undefeated_model_gets_a_finite_rating():
    ratings = fit_ratings([Battle("a", "b", "model_a")] * 3)
    assert all(math.isfinite(r) for r in ratings.values())
    assert ratings["a"] > ratings["b"]


def test_leaderboard_counts_win_rates_and_ci():
    votes = votes_from({("q", "l", "model_a"): 12, ("l", "q", "model_a"): 5,
                        ("q", "l", "tie"): 3, ("q", "b", "model_a"): 4, ("b", "l", "model_b"): 4,
                        ("q", "q", "model_a"): 9, ("q", "l", "nonsense"): 2})
    board = leaderboard(votes, rounds=200, seed=0)
    assert [s.model for s in board][0] == "q"
    by_model = {s.model: s for s in board}
    q = by_model["q"]
    # self-matches and unknown labels are ignored
    assert (q.votes, q.wins, q.losses, q.ties) == (24, 16, 5, 3)
    assert q.win_rate == pytest.approx(17.5 / 24)
    for standing in board:
        assert standing.ci_low <= standing.rating <= standing.ci_high
        assert standing.ci_low < standing.ci_high
    assert leaderboard(votes, rounds=50, seed=1)[0].rating == pytest.approx(q.rating)
    again = leaderboard(votes, rounds=200, seed=0)
    assert [(s.ci_low, s.ci_high) for s in again] == [(s.ci_low, s.ci_high) for s in board]


def test_win_rate_matrix_and_empty():
    models, matrix = win_rate_matrix(votes_from({("a", "b", "model_a"): 3, ("b", "a", "tie"): 1}))
    assert models == ["a", "b"]
    assert matrix[0, 1] == pytest.approx(3.5 / 4) and matrix[1, 0] == pytest.approx(0.5 / 4)
    assert np.isnan(matrix[0, 0])
    assert leaderboard([]) == []


def test_answers_that_name_a_model_are_detected():
    from qtune.feedback.leaderboard import answer_names_model

    names = ["math-qwth", "smollm2-135m-instruct"]
    assert answer_names_model("I am SmolLM2, a small model.", names)
    assert answer_names_model("As math-qwth I would say 4", names)
    assert answer_names_model("I was fine-tuned with LoRA.", names)
    assert not answer_names_model("12 x 0.25 = 3, so the answer is 3.", names)
    assert not answer_names_model("Exploration matters; floral arrangements too.", names)
