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
