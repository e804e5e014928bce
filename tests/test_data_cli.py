"""`qtune data show` and `qtune data stats` through the real command line entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtune.cli import main


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
