"""`qtune report --no-eval` (and its old name `qtune bench`): the report from adapter folders' own files (no model, no server)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from qtune.cli import main


def _adapter(root: Path, name: str, trainable: int, losses: list[float], compact: int) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    if name.endswith("qwth"):
        (folder / "qwth").mkdir()
        (folder / "qwth" / "cores.safetensors").write_bytes(b"\0" * compact)
    metrics = {
        "steps": len(losses),
        "trainable_parameters": trainable,
        "tokens_seen": 1000,
        "wall_seconds": 4.0,
        "initial_eval_loss": 2.0,
        "final_eval_loss": losses[-1],
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    lr = 2e-3 if name.endswith("qwth") else 2e-4
    (folder / "training_config.json").write_text(json.dumps({"lr": lr}))
    with (folder / "log.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "train_loss", "eval_loss", "lr", "seconds"])
        for step, loss in enumerate(losses, start=1):
            writer.writerow([step, loss, loss if step == len(losses) else "", 1e-4, step])


@pytest.mark.parametrize("command", ["report", "bench"])  # bench: the old name, an alias
def test_report_from_adapter_files(command: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    adapters = tmp_path / "adapters"
    # QWTH: 100 of LoRA's 400 parameters, and a higher training loss (it must say so).
    _adapter(adapters, "math-lora", 400, [2.0, 1.5, 1.0], compact=0)
    _adapter(adapters, "math-qwth", 100, [2.0, 1.6, 1.2, 1.1], compact=2048)
    output = tmp_path / "docs" / "results.md"
    argv = [command, "--no-eval", "--adapters-dir", str(adapters), "--output", str(output)]
    assert main(argv) == 0

    report = output.read_text()
    assert (tmp_path / "docs" / "loss_curves.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out
    assert "| math | QWTH | 100 | 25.0% | 2.0 KiB (qwth/) |" in report
    assert "| counselling | LoRA | not trained |" in report
    assert "math: 75.0% fewer" in report
    # Equal steps: LoRA stopped at step 3, so QWTH is read at step 3 too.
    mean_lora, mean_qwth = (2.0 + 1.5 + 1.0) / 3, (2.0 + 1.6 + 1.2) / 3
    assert f"| math | 3 | {mean_lora:.3f} | {mean_qwth:.3f} |" in report
    assert "not reproduced: QWTH does not reach a lower training loss" in report
    assert "each method trained at its own learning rate" in report
    assert "No model evaluation in this run" in report
    assert "math-lora 3 steps" in report
    assert "Learning rates differ by method (math-lora 0.0002, math-qwth 0.002)" in report
