"""The training-loss figure of the report: LoRA against QWTH, one panel per assistant."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qtune.eval.report.facts import LOSS_WINDOW, AdapterFacts

from qtune.vocab import ASSISTANTS, METHOD_LABELS, METHODS, adapter_name


def plot_loss_curves(facts: dict[str, AdapterFacts], path: Path) -> Path | None:
    """LoRA vs QWTH training loss (moving average) and held-out loss, one panel per assistant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [a for a in ASSISTANTS if any(adapter_name(a, m) in facts for m in METHODS)]
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), dpi=100)
    axes = [axes] if len(panels) == 1 else list(axes)
    colours = {"lora": "tab:blue", "qwth": "tab:red"}
    for axis, assistant in zip(axes, panels, strict=True):
        for method in METHODS:
            adapter = facts.get(adapter_name(assistant, method))
            if adapter is None:
                continue
            train = adapter.train_losses()
            if train:
                steps, losses = zip(*train, strict=True)
                axis.plot(steps, losses, color=colours[method], alpha=0.25, linewidth=0.8)
                axis.plot(
                    steps,
                    _moving_average(losses, LOSS_WINDOW),
                    color=colours[method],
                    label=f"{METHOD_LABELS[method]} train (mean of {LOSS_WINDOW})",
                )
            held_out = adapter.eval_losses()
            if held_out:
                axis.plot(
                    *zip(*held_out, strict=True),
                    "o--",
                    color=colours[method],
                    label=f"{METHOD_LABELS[method]} held-out",
                )
        axis.set_title(f"{assistant} assistant")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("cross-entropy on answer tokens")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out = []
    for index in range(len(values)):
        chunk = values[max(0, index - window + 1) : index + 1]
        out.append(sum(chunk) / len(chunk))
    return out
