"""The study report's plain answers, from hand-made rows and settings."""

from __future__ import annotations

from qtune.study.config import StudyConfig
from qtune.study.report import screened_only, sft_loss_verdict
from qtune.study.summary import MethodSummary


def _summary(after: list[float], before: float = 2.0) -> MethodSummary:
    rows = {seed: {"heldout_loss_before": before, "heldout_loss": loss}
            for seed, loss in enumerate(after)}
    return MethodSummary("qwth", 1e-3, 100, {}, {}, rows)


def test_the_sft_loss_verdict_says_whether_preference_tuning_raised_it() -> None:
    raised = sft_loss_verdict(_summary([2.10, 2.11, 2.12]))
    assert raised.startswith("**yes** (2.0000 → 2.1100, +0.1100 [")
    assert raised.endswith("3 seeds, +5.5%)")
    assert sft_loss_verdict(_summary([1.90, 1.91, 1.89])).startswith("**no**, it fell")
    assert sft_loss_verdict(_summary([2.1, 1.9, 2.0])).startswith("**no** clear change")
    assert sft_loss_verdict(_summary([2.5])) == "one seed so far (2.0000 → 2.5000, +0.5000, one seed, +25.0%)"
    assert sft_loss_verdict(_summary([])) == "not measured yet"


def test_a_method_on_the_frontier_is_not_called_screened_when_the_frontier_is_seeded() -> None:
    study = StudyConfig(name="f", tasks=["math"], methods=["lora", "vera", "lora-xs"],
                        seeds=[0, 1, 2], seeded=["lora", "frontier"],
                        learning_rates={m: [1e-3, 1e-2] for m in ("lora", "vera", "lora-xs")})
    assert not screened_only(study, "vera", "lora", frontier={"vera"})
    assert screened_only(study, "lora-xs", "lora", frontier={"vera"})
    assert screened_only(study, "vera", "lora", frontier=set())
    named_only = StudyConfig(name="n", tasks=["math"], methods=["lora", "vera"], seeds=[0, 1],
                             seeded=["lora"], learning_rates={"lora": [1e-3], "vera": [1e-3]})
    assert screened_only(named_only, "vera", "lora", frontier={"vera"})  # frontier not seeded
