"""Protocol choices a study declares: `seeded = ["frontier"]` gives every seed to the methods
a task's first-seed sweep puts on the Pareto frontier; `follow_up = "frontier"` runs the
later tasks on the named methods and the first task's frontier only."""

from __future__ import annotations

import pytest
from qtune.study.config import FRONTIER
from qtune.study.report import write_report
from qtune.study.runner import StudyRunner
from qtune.study.summary import is_complete, sweep_frontier, task_methods
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


@pytest.mark.slow
def test_a_follow_up_task_runs_the_named_methods_and_the_first_tasks_frontier(
        tiny_model_dir, tmp_path):
    methods = ["lora", "qwth-none", "lora-r1"]
    study = tiny_study(tiny_model_dir, tmp_path / "out", tasks=["math", "counselling"],
                       methods=methods, compare_to=["lora"], follow_up=FRONTIER,
                       learning_rates={m: [1e-3, 1e-2] for m in methods})
    assert study.named_methods() == ["lora"]
    runner = StudyRunner(study, runs_root=tmp_path / "runs", progress=False)
    assert not is_complete(runner.results, study)
    results = runner.run()
    on_math = {r["method"] for r in rows(results.path) if r["task"] == "math"}
    on_counselling = {r["method"] for r in rows(results.path) if r["task"] == "counselling"}
    assert on_math == set(methods)
    assert on_counselling == {"lora"} | sweep_frontier(results, study, "math")
    assert task_methods(results, study, "counselling") == [m for m in methods
                                                             if m in on_counselling]
    assert is_complete(results, study)
    text = write_report(study, results, tmp_path / "report.md", "qtune study").read_text()
    for method in set(methods) - on_counselling:
        assert f"counselling: not run ({method} is off math's frontier)" in text
    del results.rows[next(key for key in results.rows if key[0] == "counselling")]
    assert not is_complete(results, study)
