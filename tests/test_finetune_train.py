"""The training loop on a tiny random Llama that uses the real embedded tokenizer.

The tiny model keeps SmolLM2's vocabulary (49152) so that the real data, prompts and
tokenizer run unchanged; with hidden size 32 a step takes milliseconds. The slow
tests run `accelerate launch` with two CPU processes and the real embedded model.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from qtune.finetune.cli import build_config, shipped_config
from qtune.finetune.methods import owners_of
from qtune.finetune.train import TrainConfig, checkpoint_path, lr_factor, train
from safetensors.torch import load_file

from qtune.cli import main as qtune_main
from qtune.errors import QtuneError

REPO = Path(__file__).resolve().parent.parent
OUTPUT_FILES = ("adapter_config.json", "adapter_model.safetensors", "log.csv", "loss.png",
                "metrics.json", "README.md", "training_config.json")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(model_dir: Path, output: Path, **overrides) -> TrainConfig:
    """A few steps on a repeated batch of two short examples."""
    values = dict(
        base_model=str(model_dir), steps=6, batch_size=2, seq_len=64, lr=1e-2, warmup=1,
        max_train_examples=2, eval_every=2, eval_batches=1, save_every=2, output=str(output),
    )
    values.update(overrides)
    # A small circuit and small cores, for the methods that have them.
    small = dict(n_qubits=4, circuit_layers=1, tt_rank=2, n_factors=2)
    method = values.get("method", "qwth")
    values.update({k: v for k, v in small.items() if method in owners_of(k) and k not in values})
    return TrainConfig.from_dict(values)


def losses(history: list[dict]) -> list[tuple]:
    return [(r["step"], r["train_loss"], r["eval_loss"]) for r in history]


def read_log(folder: Path) -> list[dict]:
    import csv

    with (folder / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return [{"step": int(r["step"]),
             "train_loss": float(r["train_loss"]) if r["train_loss"] else None,
             "eval_loss": float(r["eval_loss"]) if r["eval_loss"] else None} for r in rows]


@pytest.mark.parametrize("method", ["lora", "qwth"])
def test_loss_decreases_on_a_repeated_batch(method, tiny_model_dir, tmp_path):
    output = tmp_path / method
    metrics = train(tiny_config(tiny_model_dir, output, method=method, steps=8,
                                lr=3e-2 if method == "qwth" else 1e-2))
    rows = read_log(output)
    trained = [r["train_loss"] for r in rows if r["train_loss"] is not None]
    assert len(trained) == 8
    assert trained[-1] < trained[0] - 0.01, trained
    for name in OUTPUT_FILES:
        assert (output / name).is_file(), name
    assert not checkpoint_path(output).parent.exists()  # removed after success
    adapter = json.loads((output / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir)
    saved = json.loads((output / "metrics.json").read_text())
    assert saved["trainable_parameters"] == metrics["trainable_parameters"]
    # 2 layers x (q: 8*(32+32) + v: 8*(32+16)) for a plain rank-8 LoRA
    assert metrics["same_rank_lora_parameters"] == 2 * (8 * 64 + 8 * 48)
    card = (output / "README.md").read_text()
    assert f"{metrics['trainable_parameters']:,}" in card and "--lora-modules" in card
    if method == "qwth":
        assert (output / "qwth").is_dir()
        assert metrics["trainable_parameters"] != metrics["same_rank_lora_parameters"]
    else:
        assert metrics["percent_of_same_rank_lora"] == 100.0


class SimulatedKill(Exception):
    pass


#: Resumable runs: both served methods, QTHA, and QWTH with its own rate per part (three
#: optimizer groups) and a non-zero start (frozen initial factors).
RESUMABLE = {"lora": {}, "qwth": {}, "qtha": {"method": "qtha", "r": 8},
             "qwth-designs": {"method": "qwth", "lr_scale_quantum": 10.0, "init": "nonzero",
                              "readout": "expval"}}


@pytest.mark.parametrize("method", sorted(RESUMABLE))
def test_resume_after_a_kill_repeats_the_uninterrupted_run(method, tiny_model_dir, tmp_path):
    lr = 1e-2 if method == "lora" else 3e-2
    settings = {"method": method, "lr": lr, "max_train_examples": None, **RESUMABLE[method]}
    whole = tiny_config(tiny_model_dir, tmp_path / "whole", **settings)
    train(whole)

    def kill_after_step_3(step: int, row: dict, model: torch.nn.Module) -> None:
        if step == 3:
            raise SimulatedKill

    broken = tiny_config(tiny_model_dir, tmp_path / "broken", **settings)
    with pytest.raises(SimulatedKill):
        train(broken, on_step=kill_after_step_3)
    assert torch.load(checkpoint_path(tmp_path / "broken"), weights_only=False)["step"] == 2
    broken.resume = True
    train(broken)

    assert losses(read_log(tmp_path / "broken")) == losses(read_log(tmp_path / "whole"))
    weights = "qtha/qtha_model.safetensors" if method == "qtha" else "adapter_model.safetensors"
    first = load_file(tmp_path / "whole" / weights)
    second = load_file(tmp_path / "broken" / weights)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_model_dir, tmp_path):
    output = tmp_path / "nan"
    config = tiny_config(tiny_model_dir, output, method="lora", save_every=2, steps=10)

    def poison_after_step_3(step: int, row: dict, model: torch.nn.Module) -> None:
        if step == 3:  # a NaN reaches the logits from the next forward pass on
            model.get_output_embeddings().register_forward_hook(
                lambda module, args, out: out * float("nan"))

    with pytest.raises(QtuneError, match="NaN/inf at step 4") as caught:
        train(config, on_step=poison_after_step_3)
    assert "--resume" in str(caught.value)
    saved = torch.load(checkpoint_path(output), weights_only=False)
    assert saved["step"] == 2
    assert all(torch.isfinite(t).all() for t in saved["trainable"].values())
    assert not (output / "adapter_model.safetensors").exists()


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    factors = [lr_factor(s, warmup=4, total=20, min_ratio=0.1) for s in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert math.isclose(factors[20], 0.1)


def finetune_args(*argv: str):
    from qtune.cli import build_parser

    return build_parser().parse_args(["finetune", *argv])


def test_flags_override_the_toml_file(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('task = "counselling"\nmethod = "lora"\nsteps = 50\nlr = 1e-3\n'
                    'batch_size = 4\ntarget_modules = ["q_proj"]\n')
    config = build_config(finetune_args("--config", str(toml), "--steps", "3", "--lr", "0.5",
                                        "--method", "qwth", "--qubits", "6", "--rank", "16"))
    assert (config.steps, config.lr, config.method, config.adapter.n_qubits,
            config.adapter.r) == (3, 0.5, "qwth",
                                                                                     6, 16)
    assert (config.task, config.batch_size, config.adapter.target_modules) == ("counselling", 4,
                                                                      ("q_proj",))
    assert config.resume is False
    assert build_config(finetune_args("--config", str(toml), "--resume")).resume is True


def test_shipped_configs_share_the_budget_per_task():
    from qtune.finetune.cli import read_toml

    shared = ("steps", "batch_size", "grad_accum", "seq_len", "warmup", "seed", "r",
              "lora_alpha", "target_modules", "eval_every", "eval_batches")
    for task in ("math", "counselling"):
        qwth = read_toml(REPO / "configs" / f"{task}-qwth.toml")
        lora = read_toml(REPO / "configs" / f"{task}-lora.toml")
        for values, method in ((qwth, "qwth"), (lora, "lora")):
            config = TrainConfig.from_dict(values)
            config.validate()
            assert (config.task, config.method) == (task, method)
            assert config.output == f"adapters/{task}-{method}"
        assert {k: qwth[k] for k in shared} == {k: lora[k] for k in shared}


def test_finetune_all_reads_the_shipped_configs(tmp_path, capsys):
    """`qtune finetune --all` (was finetune/train_all.py) runs configs/<name>.toml."""
    config = shipped_config("math-lora", steps=3)
    assert (config.method, config.steps, config.output) == ("lora", 3,
                                                            str(REPO / "adapters" / "math-lora"))
    config = shipped_config("counselling-qwth", output_root=tmp_path, resume=True)
    assert (config.output, config.resume, config.steps) == (str(tmp_path / "counselling-qwth"),
                                                            True, 80)
    with pytest.raises(QtuneError):
        shipped_config("poetry-qwth")
    with pytest.raises(SystemExit):
        finetune_args("--all", "--only", "poetry-qwth")
    assert qtune_main(["finetune", "--all", "--lr", "0.1"]) == 2
    assert "only --steps, --resume" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--task", "poetry"], "unknown task 'poetry'"),
    (["--method", "dora"], "unknown method 'dora'"),
    (["--device", "ibm.quantum"], "unknown quantum device 'ibm.quantum'"),
    (["--steps", "0"], "steps must be a positive integer"),
    (["--config", "/nonexistent/run.toml"], "does not exist"),
])
def test_bad_input_is_reported_clearly(argv, message, capsys):
    assert qtune_main(["finetune", *argv]) == 2
    assert message in capsys.readouterr().err


def test_any_installed_quantum_device_and_early_checks(capsys):
    """Any installed PennyLane device is accepted (with --shots for sampling); adapter
    settings are checked before any model or data loads."""
    config = build_config(finetune_args("--device", "default.mixed", "--shots", "100"))
    assert (config.adapter.device, config.adapter.shots, config.adapter.seed) == (
        "default.mixed", 100, config.seed)
    assert qtune_main(["finetune", "--rank", "600", "--model", "/nonexistent/model"]) == 2
    assert "rank r=600 must be an integer in 1..512" in capsys.readouterr().err
    assert TrainConfig.from_dict({"adapter": {"n_qubits": 6}, "seed": 3}).adapter.n_qubits == 6


def test_unknown_toml_key_and_bad_toml(tmp_path):
    toml = tmp_path / "typo.toml"
    toml.write_text("stepz = 3\n")
    with pytest.raises(QtuneError, match="unknown training setting"):
        build_config(finetune_args("--config", str(toml)))
    toml.write_text("steps = \n")
    with pytest.raises(QtuneError, match="not valid TOML"):
        build_config(finetune_args("--config", str(toml)))


def test_missing_data_and_unwritable_output(tiny_model_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(QtuneError, match="cannot write to the output folder"):
        train(tiny_config(tiny_model_dir, blocker / "run", method="lora"))
    empty = tmp_path / "no-datasets"
    empty.mkdir()
    monkeypatch.setenv("QTUNE_DATA_DIR", str(empty))
    with pytest.raises(QtuneError):
        train(tiny_config(tiny_model_dir, tmp_path / "run", method="lora"))


@pytest.mark.slow
def test_accelerate_launch_with_two_cpu_processes(tiny_model_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks CPU processes; with CUDA these would be GPU processes")
    output = tmp_path / "ddp"
    accelerate = Path(sys.executable).parent / "accelerate"
    # Accelerate's --cpu flag starts a single process without MPI; --multi_gpu runs
    # torchrun, and qtune asks Accelerate for CPU processes (gloo) when there is no GPU.
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no",
               "-m", "qtune.cli", "finetune", "--method", "lora", "--model", str(tiny_model_dir),
               "--steps", "3", "--batch-size", "2", "--seq-len", "64", "--eval-every", "0",
               "--lr", "1e-2", "--warmup", "1",
               "--eval-batches", "1", "--save-every", "2", "--output", str(output)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    assert metrics["examples_seen"] == 3 * 2 * 2
    two_processes = read_log(output)
    assert [r["step"] for r in two_processes] == [0, 1, 2, 3]
    # Two processes x 1 micro-batch see the same examples, and average the same way, as
    # one process accumulating 2 micro-batches.
    train(tiny_config(tiny_model_dir, tmp_path / "accum", method="lora", steps=3,
                      grad_accum=2, max_train_examples=None, eval_every=0, save_every=2))
    one_process = read_log(tmp_path / "accum")
    for a, b in zip(two_processes[1:], one_process[1:], strict=True):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-3), (a, b)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "qwth"])
def test_two_steps_on_the_embedded_model_give_a_loadable_peft_folder(method, embedded_model,
                                                                   tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from qtune.config import DEFAULT_BASE_MODEL_HF_ID

    output = tmp_path / method
    metrics = train(TrainConfig(method=method, steps=2, batch_size=2, seq_len=64, warmup=1,
                                eval_every=0, eval_batches=1, save_every=0, output=str(output)))
    assert metrics["same_rank_lora_parameters"] == 460_800
    adapter = json.loads((output / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == DEFAULT_BASE_MODEL_HF_ID
    base = AutoModelForCausalLM.from_pretrained(embedded_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(output))
    ids = torch.tensor([[1, 504, 3458, 314]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all()
    # The adapter changed something: B was trained away from its zero initialisation.
    weights = load_file(output / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and t.abs().sum() > 0 for k, t in weights.items())


# -- run folders and checkpoints are safe ------------------------------------------------
def test_a_crafted_checkpoint_is_not_executed(tiny_model_dir, tmp_path):
    """--resume reads checkpoints with weights_only=True: a pickle payload never runs."""
    output = tmp_path / "crafted"
    checkpoint_path(output).parent.mkdir(parents=True)
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"step": 1, "config": {}, "payload": Payload()}, checkpoint_path(output))
    config = tiny_config(tiny_model_dir, output, method="lora", resume=True)
    with pytest.raises(QtuneError, match="not loaded .loading it could run code"):
        train(config)
    assert not marker.exists()
    assert checkpoint_path(output).is_file()  # the user's file is left for them to inspect


def test_a_corrupt_checkpoint_names_the_file(tiny_model_dir, tmp_path):
    output = tmp_path / "corrupt"
    checkpoint_path(output).parent.mkdir(parents=True)
    checkpoint_path(output).write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(QtuneError, match=r"last\.pt is not a readable checkpoint.*--overwrite"):
        train(tiny_config(tiny_model_dir, output, method="lora", resume=True))


def test_a_run_folder_is_never_overwritten_by_accident(tiny_model_dir, tmp_path):
    output = tmp_path / "run"
    (output / "notes.txt").parent.mkdir()
    (output / "notes.txt").write_text("the user's own file")

    def stop_after_step_2(step: int, row: dict, model: torch.nn.Module) -> None:
        if step == 2:
            raise SimulatedKill

    with pytest.raises(QtuneError, match=r"holds other files \(notes\.txt\).*--overwrite"):
        train(tiny_config(tiny_model_dir, output, method="qwth"))
    assert sorted(p.name for p in output.iterdir()) == ["notes.txt"]  # nothing written
    with pytest.raises(SimulatedKill):
        train(tiny_config(tiny_model_dir, output, method="qwth", overwrite=True),
              on_step=stop_after_step_2)
    assert checkpoint_path(output).is_file()
    with pytest.raises(QtuneError, match="unfinished run's checkpoint.*--resume.*--overwrite"):
        train(tiny_config(tiny_model_dir, output, method="qwth"))
    train(tiny_config(tiny_model_dir, output, method="qwth", resume=True))
    assert (output / "qwth").is_dir()
    with pytest.raises(QtuneError, match="finished adapter"):
        train(tiny_config(tiny_model_dir, output, method="lora"))
    with pytest.raises(QtuneError, match="finished run .no checkpoint to resume"):
        train(tiny_config(tiny_model_dir, output, method="lora", resume=True))
    # --overwrite clears the old QWTH run (its qwth/ folder and metadata), not other files.
    train(tiny_config(tiny_model_dir, output, method="lora", overwrite=True))
    assert not (output / "qwth").exists() and not (output / "qwth_metadata.json").exists()
    assert json.loads((output / "training_config.json").read_text())["method"] == "lora"
    assert (output / "notes.txt").read_text() == "the user's own file"


def test_a_plain_peft_folder_is_not_overwritten(tiny_model_dir, tmp_path):
    """An adapter trained elsewhere (PEFT files, no qtune metrics) is refused untouched."""
    output = tmp_path / "peft-adapter"
    output.mkdir()
    (output / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (output / "adapter_model.safetensors").write_bytes(b"their weights")
    with pytest.raises(QtuneError, match=r"holds an adapter \(adapter_config\.json, "
                                         r"adapter_model\.safetensors\).*--overwrite"):
        train(tiny_config(tiny_model_dir, output, method="lora"))
    assert (output / "adapter_model.safetensors").read_bytes() == b"their weights"
    assert sorted(p.name for p in output.iterdir()) == ["adapter_config.json",
                                                        "adapter_model.safetensors"]


def test_a_failed_start_leaves_no_folder(tiny_model_dir, tmp_path, monkeypatch):
    empty = tmp_path / "no-datasets"
    empty.mkdir()
    monkeypatch.setenv("QTUNE_DATA_DIR", str(empty))
    output = tmp_path / "never-started"
    with pytest.raises(QtuneError):
        train(tiny_config(tiny_model_dir, output, method="lora"))
    assert not output.exists()


def test_an_output_folder_made_unwritable_mid_run(tiny_model_dir, tmp_path):
    """A write that fails mid-run ends in a QtuneError that says how to continue."""
    output = tmp_path / "readonly"

    def block_writes_after_step_2(step: int, row: dict, model: torch.nn.Module) -> None:
        if step == 2:  # step 2's checkpoint is written; then log.csv cannot be replaced
            (output / "log.csv").unlink()
            (output / "log.csv").mkdir()

    with pytest.raises(QtuneError, match=r"could not write .*log\.csv.*--resume"):
        train(tiny_config(tiny_model_dir, output, method="lora"),
              on_step=block_writes_after_step_2)
    assert checkpoint_path(output).is_file()


def test_a_run_without_the_step_zero_evaluation_still_ends_with_one(tiny_model_dir, tmp_path):
    metrics = train(tiny_config(tiny_model_dir, tmp_path, method="lora", eval_every=0,
                                eval_at_start=False))
    rows = read_log(tmp_path)
    assert rows[0]["step"] == 0 and rows[0]["eval_loss"] is None
    assert [r["step"] for r in rows if r["eval_loss"] is not None] == [6]
    assert metrics["initial_eval_loss"] is None
    assert metrics["final_eval_loss"] == rows[-1]["eval_loss"]
    assert "| eval loss before training | n/a |" in (tmp_path / "README.md").read_text()


#: Train and held-out losses of 3 steps on the embedded model (math, seed 3, fp32), as
#: the trainer gave them before training objectives were separated from the loop
#: (commit 65a01d8); a tolerance for other CPUs' kernels, far below any change of data,
#: order or loss.
BEFORE_OBJECTIVES = {
    "lora": ([3.762150764465332, 2.538728713989258, 1.8770906925201416],
             [1.2959522008895874, 1.121582269668579]),
    "qwth": ([3.762150764465332, 2.6640000343322754, 2.0221381187438965],
             [1.2959522008895874, 1.2359752655029297]),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(BEFORE_OBJECTIVES))
def test_the_trainer_gives_the_losses_it_gave_before(method, embedded_model, tmp_path,
                                                     one_torch_thread):
    from qtune.adapter_format import read_log

    config = TrainConfig.from_dict(dict(
        task="math", method=method, steps=3, batch_size=2, seq_len=64, warmup=1, lr=3e-3,
        eval_every=0, eval_batches=1, save_every=0, mixed_precision="no",
        max_train_examples=16, seed=3, output=str(tmp_path / "run"))).validate()
    train(config)
    rows = read_log(tmp_path / "run" / "log.csv")
    train_losses = [r["train_loss"] for r in rows if r["train_loss"] is not None]
    eval_losses = [r["eval_loss"] for r in rows if r["eval_loss"] is not None]
    expected_train, expected_eval = BEFORE_OBJECTIVES[method]
    assert train_losses == pytest.approx(expected_train, abs=1e-3)
    assert eval_losses == pytest.approx(expected_eval, abs=1e-3)
