"""`qtune study` on a tiny model: a resumed study skips finished runs and gives the same
rows; bad input is refused with a message that says what to do; the report is written."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from qtune.finetune.train import train
from qtune.study.config import StudyConfig, extend_sweep
from qtune.study.results import COLUMNS, ResultsFile
from qtune.study.runner import StudyRunner
from study_fixtures import rows, tiny_study

from qtune.cli import main
from qtune.errors import QtuneError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_a_resumed_study_skips_finished_runs_and_gives_the_same_rows(tiny_model_dir, tmp_path):
    whole = tiny_study(tiny_model_dir, tmp_path / "whole")
    StudyRunner(whole, runs_root=tmp_path / "runs-whole", progress=False).run()
    expected = rows(tmp_path / "whole" / "runs.csv")
    assert len(expected) == 2 * 2 + 2 * 1  # two sweeps of two rates, one more seed each

    calls = []

    def killed_in_the_fourth_run(config):
        calls.append(config)
        if len(calls) == 4:  # stop inside the run, after its first checkpoint
            def stop(step, row, model):
                raise Interrupt
            return train(config, on_step=stop)
        return train(config)

    study = tiny_study(tiny_model_dir, tmp_path / "broken")
    runs = tmp_path / "runs-broken"
    with pytest.raises(Interrupt):
        StudyRunner(study, train=killed_in_the_fourth_run, runs_root=runs, progress=False).run()
    assert len(rows(tmp_path / "broken" / "runs.csv")) == 3  # nothing lost but the run in progress
    again = []

    def counted(config):
        again.append(config)
        return train(config)

    StudyRunner(study, train=counted, runs_root=runs, progress=False).run()
    assert len(again) == 3 and again[0].resume  # the interrupted run continued
    assert rows(tmp_path / "broken" / "runs.csv") == expected
    report = tmp_path / "study.md"
    assert main(["study", "--config", str(write_toml(study, tmp_path)), "--report-only",
                 "--report", str(report)]) == 0
    text = report.read_text()
    assert "| lora |" in text and "| qwth-none |" in text and "incomplete" not in text
    assert (tmp_path / "broken" / "tiny-math.png").stat().st_size > 1000


def write_toml(study: StudyConfig, folder: Path) -> Path:
    def value(v):
        return repr(v) if not isinstance(v, str) else f'"{v}"'

    lines = [f"name = {value(study.name)}", f"tasks = {study.tasks!r}".replace("'", '"'),
             f"methods = {study.methods!r}".replace("'", '"'), f"seeds = {study.seeds!r}",
             f"output = {value(study.output)}", f"max_extensions = {study.max_extensions}",
             "[learning_rates]",
             *(f'"{m}" = {rates!r}' for m, rates in study.learning_rates.items()), "[train]",
             *(f"{k} = {value(v)}" for k, v in study.train.items())]
    path = folder / "tiny.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"methods": ["lora", "dora"]}, "unknown method 'dora'"),
    ({"tasks": ["poetry"]}, "unknown task 'poetry'"),
    ({"learning_rates": {"lora": [1e-3], "qwth-none": [1e-3, 1e-2]}},
     "needs at least two positive rates"),
    ({"seeds": []}, "seeds is empty"),
])
def test_bad_study_settings_are_refused(change, message, tmp_path):
    with pytest.raises(QtuneError, match=message):
        tiny_study(Path("/models/tiny"), tmp_path, **change)


def test_a_small_held_out_set_and_run_keys_in_train_are_refused(tmp_path):
    train_values = dict(steps=2, batch_size=4, eval_batches=4)
    with pytest.raises(QtuneError, match="held-out set is 16 examples"):
        tiny_study(Path("/m"), tmp_path, train=train_values)
    with pytest.raises(QtuneError, match="may not set lr"):
        tiny_study(Path("/m"), tmp_path, train={**train_values, "eval_batches": 32, "lr": 1.0})


def test_runs_from_another_study_config_are_refused(tmp_path):
    study = tiny_study(Path("/m"), tmp_path)
    results = ResultsFile(tmp_path / "runs.csv", study)
    results.append({"study": "tiny", "fingerprint": results.fingerprint("lora"), "task": "math",
                    "method": "lora", "trainable_params": 10, "lr": 1e-3, "seed": 0,
                    "steps": 2, "train_loss": 1.0, "heldout_loss": 2.0, "seconds": 1,
                    "phase": "sweep"})
    assert len(ResultsFile(tmp_path / "runs.csv", study).rows) == 1
    other = tiny_study(Path("/m"), tmp_path, train={**study.train, "steps": 3})
    with pytest.raises(QtuneError, match="different study config.*another `output`"):
        ResultsFile(tmp_path / "runs.csv", other)


def test_an_older_runs_csv_is_widened_to_today_s_columns_and_rows_say_where_they_ran(tmp_path):
    """A file written before the machine column keeps its rows; new rows record their
    machine, and the report counts the runs by machine."""
    from qtune.study.report import machines_text

    study = tiny_study(Path("/m"), tmp_path)
    path = tmp_path / "runs.csv"
    old_columns = "study,fingerprint,task,method,trainable_params,lr,seed,steps,train_loss,heldout_loss,seconds,phase"
    path.write_text(f"{old_columns}\ntiny,{study.fingerprint('lora')},math,lora,10,0.001,0,2,1.0,2.0,1,sweep\n")
    results = ResultsFile(path, study)
    results.append({"study": "tiny", "fingerprint": results.fingerprint("lora"), "task": "math",
                    "method": "lora", "trainable_params": 10, "lr": 1e-2, "seed": 0,
                    "steps": 2, "train_loss": 1.5, "heldout_loss": 2.5, "seconds": 1,
                    "phase": "sweep", "machine": "x86_64 (AVX2 only)"})
    found = rows(path)
    assert [(r["lr"], r["heldout_loss"], r["machine"]) for r in found] == [
        ("0.001", "2.0", ""), ("0.01", "2.5", "x86_64 (AVX2 only)")]
    assert list(csv.DictReader(path.open()).fieldnames) == list(COLUMNS)
    again = ResultsFile(path, study)
    assert len(again.rows) == 2 and not list(tmp_path.glob("*.tmp"))
    assert machines_text(list(again.rows.values())) == (
        "Runs by machine: not recorded (1 run); x86_64 (AVX2 only) (1 run).")


@pytest.mark.parametrize(("flags", "named"), [
    ({"avx2", "fma"}, "AVX2 only"),
    ({"avx2", "avx512f"}, "AVX-512"),
    ({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "AVX-512, native bf16, AMX"),
    (set(), "no AVX2"),
])
def test_a_run_names_its_cpu_s_class(flags, named, monkeypatch):
    from qtune import hardware

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    assert hardware.cpu_class() == named


def test_studies_share_runs_csv_and_reuse_the_runs_of_the_methods_they_share(tmp_path):
    circuit = tiny_study(Path("/m"), tmp_path)
    results = ResultsFile(tmp_path / "runs.csv", circuit)
    for method in ("lora", "qwth-none"):
        results.append({"study": "tiny", "fingerprint": results.fingerprint(method),
                        "task": "math", "method": method, "trainable_params": 10, "lr": 1e-3,
                        "seed": 0, "steps": 2, "train_loss": 1.0, "heldout_loss": 2.0,
                        "seconds": 1, "phase": "sweep"})
    designs = tiny_study(Path("/m"), tmp_path, name="designs", methods=["lora", "qtha"],
                         learning_rates={"lora": [1e-3, 1e-2], "qtha": [1e-3, 1e-2]})
    shared = ResultsFile(tmp_path / "runs.csv", designs)
    assert list(shared.rows) == [("math", "lora", "1e-03", 0)] and shared.other_rows == 1
    assert designs.fingerprint("lora") == circuit.fingerprint("lora")
    assert designs.fingerprint("qtha") != designs.fingerprint("lora")


def test_a_study_extends_another_and_names_its_own_report(tmp_path):
    (tmp_path / "base.toml").write_text(
        'name = "base"\ntasks = ["math"]\nmethods = ["lora", "qwth"]\noutput = "out"\n'
        'report = "docs/base.md"\ncompare_to = ["qwth"]\n'
        "[learning_rates]\nlora = [1e-3, 1e-2]\nqwth = [1e-3, 1e-2]\n"
        "[train]\nsteps = 2\nbatch_size = 4\neval_batches = 32\n")
    (tmp_path / "child.toml").write_text(
        'extends = "base.toml"\nmethods = ["lora", "qwth", "qtha"]\ncompare_to = ["lora"]\n'
        'report = "docs/child.md"\n[learning_rates]\nqtha = [1e-3, 3e-3]\n')
    child = StudyConfig.from_toml(tmp_path / "child.toml")
    assert child.name == "child" and child.train["steps"] == 2 and child.output == "out"
    assert child.learning_rates == {"lora": [1e-3, 1e-2], "qwth": [1e-3, 1e-2],
                                    "qtha": [1e-3, 3e-3]}
    assert child.report_path.name == "child.md"
    from qtune.study.report import questions

    assert [q[:2] for q in questions(child)] == [("qwth", "lora"), ("qtha", "lora")]
    with pytest.raises(QtuneError, match="compare_to names 'dora'"):
        StudyConfig(**{**child.__dict__, "compare_to": ["dora"]}).validate()


def test_the_shipped_designs_study_is_valid_and_shares_the_circuit_study_budget():
    root = Path(__file__).resolve().parent.parent / "studies"
    designs = StudyConfig.from_toml(root / "designs.toml")
    circuit = StudyConfig.from_toml(root / "circuit.toml")
    assert {"qtha", "qwth-expval", "qwth-layer", "qwth-nonzero", "qwth-lr-split",
            "qwth-cores"} <= set(designs.methods)
    assert designs.fingerprint("lora") == circuit.fingerprint("lora")
    assert designs.report_path != circuit.report_path
    for method in designs.methods:  # every design's run config is valid before any run
        designs.run_config("math", method, 1e-3, 0, Path("/tmp/x")).validate()


def test_a_sweep_is_extended_beyond_the_edge_its_best_rate_sits_at():
    assert extend_sweep([1e-3, 1e-2], 1e-2) == pytest.approx(1e-1)
    assert extend_sweep([1e-3, 1e-2], 1e-3) == pytest.approx(1e-4)
    assert extend_sweep([1e-3, 3e-3, 1e-2], 3e-3) is None


def test_the_shipped_study_is_valid():
    study = StudyConfig.from_toml(Path(__file__).resolve().parent.parent / "studies" /
                                  "circuit.toml")
    assert set(study.methods) == {"lora", "lora-r1", "qwth", "qwth-none", "qwth-vector",
                                  "qwth-frozen"}
    assert len(study.seeds) >= 3 and all(len(r) >= 4 for r in study.learning_rates.values())


def test_sweep_table_puts_an_extended_rate_in_the_column_of_its_rounded_value(tmp_path):
    from qtune.study.report import sweep_table

    study = StudyConfig.from_toml(Path(__file__).resolve().parent.parent / "studies" /
                                  "circuit.toml")
    results = ResultsFile(tmp_path / "runs.csv", study)
    results.rows = {("math", "lora", "9.99e-03", 0): {"lr": 3.16e-3 * 3.16, "heldout_loss": 1.2},
                    ("math", "qwth", "1e-02", 0): {"lr": 1e-2, "heldout_loss": 1.1}}
    header, *body = sweep_table(study, results, "math")[2:]
    assert header == "| method | 0.01 |"
    assert "| lora | **1.2000** |" in body and "| qwth | **1.1000** |" in body


def run_metrics(heldout_loss: float) -> dict:
    """What the training loop returns, for tests of the grid's walk rather than training."""
    return {"trainable_parameters": 10, "steps": 2, "wall_seconds": 1.0,
            "final_train_loss_mean10": 1.0, "final_eval_loss": heldout_loss}


def test_only_seeded_methods_run_at_every_seed_and_the_report_says_the_rest_were_screened(
        tmp_path):
    study = tiny_study(Path("/m"), tmp_path, seeds=[0, 1, 2], seeded=["lora"],
                       compare_to=["lora"])
    trained = []

    def loss_by_rate(config):  # the grid's walk is under test here, not training
        trained.append((config.method, config.lr, config.seed))
        return run_metrics(abs(config.lr - 1e-3) + 0.01 * config.seed)

    StudyRunner(study, train=loss_by_rate, runs_root=tmp_path / "runs", progress=False).run()
    assert sorted(t for t in trained if t[2] > 0) == [("lora", 1e-3, 1), ("lora", 1e-3, 2)]
    assert len(trained) == study.planned_runs() == 2 + 2 + 2
    from qtune.study.report import write_report

    text = write_report(study, StudyRunner(study, train=loss_by_rate, progress=False).results,
                        tmp_path / "report.md", "qtune study").read_text()
    assert "screened at one seed only" in text and "for `lora`; the other methods" in text
    with pytest.raises(QtuneError, match="seeded names 'qtha'"):
        tiny_study(Path("/m"), tmp_path, seeded=["qtha"])


def test_log_axes_label_only_1_2_and_5_of_each_decade_and_families_share_a_marker():
    from qtune.study.plots import marker, plain, thousands

    assert [thousands(v, 0) for v in (2e4, 3e4, 5e4, 1e5, 4.6e5)] == ["20k", "", "50k",
                                                                       "100k", ""]
    assert [plain(v, 0) for v in (0.007, 0.01, 0.02, 0.09, 0.5, 3, 5)] == [
        "", "0.01", "0.02", "", "0.5", "", "5"]
    assert marker("qwth-tt8") == marker("qwth") != marker("lora-r2") == marker("lora")
    assert len({marker(m) for m in ("lora", "qwth", "vera", "lora-xs", "qtha")}) == 5


def test_a_rate_another_sweep_reached_by_extension_is_not_trained_again(tmp_path):
    study = tiny_study(Path("/m"), tmp_path, seeds=[0],
                       learning_rates={"lora": [3.16e-3, 1e-2], "qwth-none": [1e-3, 1e-2]})
    results = ResultsFile(tmp_path / "runs.csv", study)
    results.append({"study": "tiny", "fingerprint": results.fingerprint("lora"), "task": "math",
                    "method": "lora", "trainable_params": 10, "lr": 3.16e-3 * 3.16, "seed": 0,
                    "steps": 2, "train_loss": 1.0, "heldout_loss": 2.0, "seconds": 1,
                    "phase": "sweep"})
    trained = []

    def record(config):
        trained.append((config.method, config.lr))
        return run_metrics(3.0)

    StudyRunner(study, train=record, runs_root=tmp_path / "runs", progress=False).run()
    assert ("lora", 1e-2) not in trained and ("lora", 3.16e-3) in trained


@pytest.mark.slow
def test_a_preference_study_chooses_rates_by_the_preference_loss(tiny_model_dir, tmp_path):
    """objective = "dpo" as a study setting: each method starts from its own adapter
    (a template), rates are chosen by the held-out preference loss, rows and the report
    carry accuracy and held-out loss before and after."""
    import json

    from qtune.finetune.config import TrainConfig
    from qtune.study.report import write_report

    starts = tmp_path / "starts"
    for method, extra in (("lora", {}), ("qwth", dict(n_qubits=4, circuit_layers=1,
                                                       tt_rank=2, n_factors=2))):
        train(TrainConfig.from_dict(dict(
            task="math", method=method, base_model=str(tiny_model_dir), steps=1, batch_size=2,
            seq_len=48, warmup=1, eval_every=0, eval_batches=1, save_every=0,
            max_train_examples=4, mixed_precision="no", output=str(starts / f"math-{method}"),
            **extra)).validate())
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Name a number above {i}.",
                                         "chosen": str(i + 1), "rejected": "no"}) + "\n"
                             for i in range(30)))
    budget = dict(base_model=str(tiny_model_dir), steps=2, batch_size=4, seq_len=48, warmup=1,
                  eval_every=0, eval_batches=32, save_every=1, max_train_examples=8,
                  mixed_precision="no", objective="dpo", beta=0.5,
                  start_from=str(starts / "{task}-{method}"))
    study = tiny_study(tiny_model_dir, tmp_path / "out", methods=["lora", "qwth"], seeds=[0],
                       learning_rates={"lora": [1e-3, 1e-1], "qwth": [1e-3, 1e-1]},
                       train=budget, select_by="preference_loss", compare_to=["lora"],
                       preferences={"math": str(pairs)})
    StudyRunner(study, runs_root=tmp_path / "runs", progress=False).run()
    found = rows(tmp_path / "out" / "runs.csv")
    assert len(found) == 4
    for row in found:
        assert float(row["preference_loss"]) > 0 and row["preference_accuracy_before"]
        assert row["heldout_loss_before"] and row["heldout_loss"]
    results = ResultsFile(tmp_path / "out" / "runs.csv", study)
    for method in ("lora", "qwth"):
        swept = [r for r in results.rows.values() if r["method"] == method]
        best = min(swept, key=lambda r: r["preference_loss"])["lr"]
        assert results.best_rate("math", method, 0) == best
    kept = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").open()]
    assert len(kept) == 4  # every run's held-out pair scores, 3 pairs (a tenth of 30)
    for run, row in zip(kept, found, strict=True):
        assert (run["method"], run["lr"]) == (row["method"], float(row["lr"]))
        assert len(run["before"]) == len(run["after"]) == 3
        assert sum(s > 0 for s in run["after"]) / 3 == float(row["preference_accuracy"])
    text = write_report(study, results, tmp_path / "report.md", "qtune study").read_text()
    assert "held-out preference loss" in text and "accuracy before" in text
    assert "| lora | 3 | 1 |" in text and "Change of qwth minus change of lora" in text
    assert "Did tuning raise lora's held-out SFT loss? math: one seed so far" in text
    assert "sweep (seed 0), held-out preference accuracy (%); the rate selected by" in text
    assert (tmp_path / "out" / "tiny-math.png").stat().st_size > 1000  # before/after figure
    elsewhere = write_report(study, results, tmp_path / "elsewhere" / "r.md", "qtune study")
    assert "(../out/runs.csv)" in elsewhere.read_text()  # links from where it was written
    # other pairs than the finished runs used (math pairs made on another machine): refused
    assert len({run["data"] for run in kept}) == 1 and len(kept[0]["data"]) == 12
    pairs.write_text(pairs.read_text().replace("no", "nope"))
    with pytest.raises(QtuneError, match="not what this study's finished math runs used"):
        StudyRunner(study, runs_root=tmp_path / "runs", progress=False).run()
    assert "Objective: DPO (beta 0.5)" in text and "(math) preferences" in text
    with pytest.raises(QtuneError, match="set select_by to match"):
        tiny_study(tiny_model_dir, tmp_path / "x", train=budget,
                   preferences={"math": str(pairs)})


@pytest.mark.slow
def test_a_study_on_a_local_two_worker_ray_gives_the_sequential_rows(tiny_model_dir, tmp_path):
    """The same study sequentially and as Ray tasks on a local two-worker Ray: the same
    rows (order aside), the protocol (sweep, then the other seed at the best rate) kept."""
    from qtune.study.ray_pool import RayPool

    sequential = tiny_study(tiny_model_dir, tmp_path / "seq")
    StudyRunner(sequential, runs_root=tmp_path / "runs-seq", progress=False).run()
    expected = sorted(rows(tmp_path / "seq" / "runs.csv"), key=lambda r: sorted(r.items()))
    study = tiny_study(tiny_model_dir, tmp_path / "ray")
    pool = RayPool("local", cpus_per_run=1, local_cpus=2)
    try:
        StudyRunner(study, runs_root=tmp_path / "runs-ray", progress=False, pool=pool).run()
    finally:
        pool.close()
    found = sorted(rows(tmp_path / "ray" / "runs.csv"), key=lambda r: sorted(r.items()))
    assert found == expected and len(found) == 6


def test_pair_scores_are_kept_per_run_and_tested_paired_over_examples(tmp_path):
    """Right before, share of seeds right after, and the change, on a hand-checkable case;
    a run without scores (fine-tuning) keeps none."""
    from qtune.study.pair_scores import (
        ScoresFile,
        gain_cells,
        gain_difference,
        gain_verdict,
        right_before_after,
    )

    path = tmp_path / "scores.jsonl"
    kept = ScoresFile(path)
    cell = {"study": "s", "fingerprint": "f", "task": "math", "method": "qwth", "lr": 1e-3}
    kept.append({**cell, "seed": 0}, {"preference_scores_before": [1.0, -1.0, -2.0, -0.5],
                                      "preference_scores": [1.0, 0.5, -1.0, -0.5]})
    kept.append({**cell, "seed": 1}, {"preference_scores_before": [1.0, -1.0, -2.0, -0.5],
                                      "preference_scores": [2.0, 0.5, 0.1, -0.5]})
    kept.append({**cell, "seed": 2}, {"final_eval_loss": 1.0})  # no scores: nothing kept
    runs = ScoresFile(path).of("f", "math", "qwth", [{"lr": 1e-3, "seed": s} for s in (0, 1, 2)])
    assert [run["seed"] for run in runs] == [0, 1]
    before, after = right_before_after(runs)
    assert before.tolist() == [1, 0, 0, 0] and after.tolist() == [1, 1, 0.5, 0]
    cells = gain_cells(runs)
    assert cells[:4] == ["4", "2", "25.0", "62.5"] and cells[4].startswith("37.5 [")
    assert cells[5].startswith("0.88")  # the mean score: -0.625 before, 0.2625 after
    assert gain_difference(runs, runs).startswith("0.0 [0.0, 0.0]")
    assert gain_cells([]) == ["n/a"] * 6
    assert "25.0% → 62.5%, 37.5 [" in gain_verdict(runs) and "4 examples, 2 seeds" in gain_verdict(runs)
    better = [{"before": [-1.0] * 20, "after": [1.0] * 20}]
    assert gain_verdict(better).startswith("**yes**, it rose (0.0% → 100.0%")
    assert gain_verdict([{"before": [1.0] * 20, "after": [-1.0] * 20}]).startswith("**no**, it fell")
    assert gain_verdict([]) == "not measured yet"


def test_the_report_says_which_adapter_is_best_at_qwth_s_size():
    from qtune.study.report import size_answer
    from qtune.study.summary import MethodSummary

    def method(name, size, losses):
        by_seed = dict(enumerate(losses))
        return MethodSummary(name, 1e-3, size, by_seed, by_seed, {})

    summaries = {"qwth": method("qwth", 44160, [1.16, 1.17, 1.15]),
                 "lora-r1": method("lora-r1", 57600, [1.14, 1.16, 1.13]),
                 "lora": method("lora", 460800, [1.13, 1.14, 1.12]),
                 "qwth-tt2": method("qwth-tt2", 17880, [1.17])}
    answer = size_answer(summaries)
    assert answer.startswith("the best is lora-r1 (57,600 parameters): 1.1433 against "
                             "qwth's 1.1600, 0.0167 lower [95% CI 0.0023, 0.0310], "
                             "paired t-test p = ")
    assert ("(means over 3 seeds). QWTH variants on the Pareto frontier: qwth-tt2 (17,880), "
            "qwth (44,160).") in answer
    # Both sizes' nearest other adapter is lora-r1: the one with the lower loss speaks.
    assert answer.endswith("qwth against the nearest adapter of another kind, lora-r1 (57,600): "
                           "1.1600 against 1.1433, 0.0167 higher [95% CI 0.0023, 0.0310], "
                           "paired t-test p = 0.038 (means over 3 seeds).")
    del summaries["lora-r1"]  # nothing else of its size: no answer
    assert size_answer(summaries) is None


def test_a_report_needs_the_rows_not_the_data(tmp_path, capsys):
    """--report-only reads no training data (it may be absent where reports are written);
    a run of the same study file is refused for the missing data before anything loads."""
    toml = tmp_path / "p.toml"
    toml.write_text(
        f'name = "p"\ntasks = ["math"]\nmethods = ["lora", "qwth"]\noutput = "{tmp_path / "out"}"\n'
        'select_by = "preference_loss"\ncompare_to = ["lora"]\n'
        '[learning_rates]\nlora = [1e-3, 1e-2]\nqwth = [1e-3, 1e-2]\n'
        f'[train]\nobjective = "dpo"\npreferences = "{tmp_path / "absent.jsonl"}"\n'
        'start_from = "adapters/{task}-{method}"\neval_batches = 32\nbatch_size = 4\n')
    assert main(["study", "--config", str(toml), "--report-only",
                 "--report", str(tmp_path / "p.md")]) == 0
    assert "# Study `p`" in (tmp_path / "p.md").read_text()
    with pytest.raises(QtuneError, match="absent.jsonl"):
        StudyConfig.from_toml(toml)
