"""A tiny study for the study tests: the real trainer on a tiny model, two methods, two
seeds, two steps per run."""

from __future__ import annotations

import csv
from pathlib import Path

from qtune.study.config import StudyConfig

VOLATILE = {"seconds"}  # wall time differs between runs; nothing else may


def tiny_study(model_dir: Path, output: Path, **overrides) -> StudyConfig:
    values = dict(
        name="tiny", tasks=["math"], methods=["lora", "qwth-none"], seeds=[0, 1],
        learning_rates={"lora": [1e-3, 1e-2], "qwth-none": [1e-3, 1e-2]},
        output=str(output), max_extensions=0,
        train=dict(base_model=str(model_dir), steps=2, batch_size=4, seq_len=64, warmup=1,
                   eval_every=0, eval_batches=32, save_every=1, max_train_examples=8,
                   n_qubits=4, circuit_layers=1, tt_rank=2, n_factors=2),
    )
    values.update(overrides)
    return StudyConfig(**values).validate()


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return [{k: v for k, v in row.items() if k not in VOLATILE}
                for row in csv.DictReader(handle)]
