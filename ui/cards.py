"""Model cards in the UI: what each served model is, from the files served with it.

``qtune serve`` serves every adapter from a snapshot that carries the run's metrics.json
and training_config.json beside the weights (``adapter_format.SNAPSHOT_FILES``), and
``/v1/models`` reports that snapshot as the adapter's ``root``. When the UI runs on the
server's machine it reads the card from there, so the card always describes the weights
being served; from elsewhere it says that no card is available.
"""

from __future__ import annotations

from pathlib import Path

from qtune.ui.endpoint import ServedModel

from qtune import adapter_format as fmt
from qtune.errors import QtuneError


def card_facts(root: str | None) -> tuple[dict, dict] | None:
    """(metrics, training config) of a served adapter, or None when they cannot be read."""
    folder = Path(root) if root else None
    if folder is None or not (folder / fmt.METRICS_FILE).is_file():
        return None
    try:
        return (fmt.read_json(folder / fmt.METRICS_FILE),
                fmt.read_json(folder / fmt.TRAINING_CONFIG_FILE))
    except (QtuneError, OSError):  # a card is optional: never break the page for it
        return None


def model_card(model: ServedModel | None) -> str:
    """A short Markdown card: kind, size, training budget, held-out loss."""
    if model is None:
        return ""
    if model.method == "base":
        return (f"**{model.name}** · base model, no adapter: what every adapter starts "
                "from.")
    head = f"**{model.label}** · `{model.name}` · weights `{model.version}`"
    facts = card_facts(model.root)
    if facts is None:
        return f"{head}\n\nNo card: this endpoint does not share its adapter files with the UI."
    metrics, config = facts
    lines = [head, ""]
    trainable, reference = metrics.get("trainable_parameters"), metrics.get(
        "same_rank_lora_parameters")
    if trainable:
        share = (f" ({100 * trainable / reference:.1f}% of a rank-{config.get('r', '?')} "
                 "LoRA on the same layers)" if reference else "")
        lines.append(f"- {trainable:,} trainable parameters{share}")
    if metrics.get("steps"):
        lines.append(f"- trained {metrics['steps']} steps × {metrics.get('batch_size', '?')} × "
                     f"{metrics.get('seq_len', '?')} tokens on `{metrics.get('task', '?')}`, "
                     f"peak lr {config.get('lr', '?')}")
    start, end = metrics.get("initial_eval_loss"), metrics.get("final_eval_loss")
    if start is not None and end is not None:
        lines.append(f"- held-out loss {start:.3f} → {end:.3f} "
                     f"({metrics.get('eval_split', 'held-out')} split)")
    return "\n".join(lines)
