"""`qtune data show` and `qtune data stats` through the real command line entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtune.cli import main
from qtune.errors import QtuneError


def test_stats_counts_every_split(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "stats", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    for task, split, rows in (
        ("math", "train", 7273),
        ("math", "dev", 200),
        ("math", "test", 1319),
        ("counselling", "validation", 81),
        ("cpsycound", "test", 158),
    ):
        assert any(line.split()[:3] == [task, split, str(rows)] for line in out.splitlines())


def test_show_prints_examples(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["data", "show", "math", "--split", "test", "-n", "2", "--data-dir", str(data_dir)])
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("=== math test #") == 2
    assert "[final answer: 18]" in out and "#### 18" in out and "<<" not in out


def test_show_unknown_split_is_a_user_error(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "show", "cpsycound", "--split", "dev", "--data-dir", str(data_dir)]) == 2
    assert "choose one of train, test" in capsys.readouterr().err


def test_lengths_measure_rows_as_the_trainer_cuts_them(data_dir, embedded_model, capsys):
    assert main(["data", "lengths", "math", "-n", "20", "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    assert "math train: 20 rows, mean 64.0 tokens, 100.0% cut at 64" in out
    assert main(["data", "lengths", "math", "-n", "20", "--seq-len", "4096"]) == 0
    mean = float(capsys.readouterr().out.split("mean ")[1].split(" tokens")[0])
    assert 64 < mean < 4096


def test_without_a_data_folder_or_network_the_loader_says_what_to_do(tmp_path: Path) -> None:
    """A fresh clone with no ../shared: the loaders go to the Hub, and offline they fail with
    a message that names the cause and the fix (no traceback)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "QTUNE_DATA_DIR"}
    # No network as far as the Hub client knows, and an empty cache: nothing to fall back on.
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               QTUNE_HOME=str(tmp_path / "home"))
    result = subprocess.run([sys.executable, "-m", "qtune.cli", "data", "show", "math"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    message = result.stderr
    assert "Traceback" not in message, message
    assert "Hugging Face Hub" in message and "offline" in message
    assert "QTUNE_DATA_DIR" in message


def test_a_named_data_folder_that_is_missing_is_refused(tmp_path: Path) -> None:
    from qtune.data.datasets import resolve_data_dir

    with pytest.raises(QtuneError, match="does not exist"):
        resolve_data_dir(tmp_path / "nowhere")
