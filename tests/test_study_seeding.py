"""`seeded = ["frontier"]`: the methods a task's sweep puts on the Pareto frontier run at
every seed, decided from the first seed's sweep alone."""

from __future__ import annotations

import pytest
from qtune.study.config import FRONTIER
from qtune.study.runner import StudyRunner
from qtune.study.summary import sweep_frontier
from study_fixtures import rows, tiny_study

from qtune.errors import QtuneError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_the_methods_on_the_sweeps_frontier_get_every_seed(tiny_model_dir, tmp_path):
    study = tiny_study(tiny_model_dir, tmp_path / "out", seeded=[FRONTIER],
                       methods=["lora", "qwth-none", "lora-r1"],
                       learning_rates={m: [1e-3, 1e-2] for m in ("lora", "qwth-none", "lora-r1")})
    results = StudyRunner(study, runs_root=tmp_path / "runs", progress=False).run()
    frontier = sweep_frontier(results, study, "math")
    smallest = min(("lora", "qwth-none", "lora-r1"),
                   key=lambda m: int(next(r for r in rows(results.path) if r["method"] == m)
                                     ["trainable_params"]))
    assert smallest in frontier  # nothing smaller can beat it
    seeded = {r["method"] for r in rows(results.path) if r["seed"] == "1"}
    assert seeded == frontier
    assert all(r["phase"] == "seeds" for r in rows(results.path) if r["seed"] == "1")
    # the later seeds do not move the frontier: it is read from the first seed's sweep
    assert sweep_frontier(results, study, "math") == frontier


def test_seeded_names_methods_or_the_frontier(tiny_model_dir, tmp_path):
    with pytest.raises(QtuneError, match="neither among the study's methods nor 'frontier'"):
        tiny_study(tiny_model_dir, tmp_path, seeded=["vera"])
    study = tiny_study(tiny_model_dir, tmp_path, seeded=["lora", FRONTIER])
    assert study.seeds_of("qwth-none") == [0]
    assert study.seeds_of("qwth-none", on_frontier=True) == [0, 1]
    assert study.seeds_of("lora") == [0, 1]
