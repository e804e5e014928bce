"""Loss curves of a training run as a PNG (matplotlib, headless Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot_losses(rows: Sequence[Mapping[str, object]], path: Path, title: str = "") -> Path:
    """Plot train loss per step and eval loss where it was measured; return ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    train = [(r["step"], r["train_loss"]) for r in rows if _finite(r.get("train_loss"))]
    evals = [(r["step"], r["eval_loss"]) for r in rows if _finite(r.get("eval_loss"))]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        axes.plot(*zip(*train, strict=True), label="train loss", linewidth=1.2)
    if evals:
        axes.plot(*zip(*evals, strict=True), "o-", label="eval loss", linewidth=1.5)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("cross-entropy (assistant tokens)")
    axes.set_title(title or "training loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
