"""The model card (README.md) written next to every trained adapter.

It states what the adapter is, what it was trained on and with what budget, how well
training went (losses), how big it is compared with a plain LoRA of the same rank, and
how to serve it. Every number comes from the run's metrics, nothing is typed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtune.finetune.methods import get_method

from qtune import adapter_format as fmt

if TYPE_CHECKING:
    from qtune.finetune.config import TrainConfig

TASK_DATA = {
    "chat": "the assistant's own chat file (its `train` data)",
    "math": "GSM8K grade-school maths word problems with worked solutions (MIT)",
    "counselling": "CounselChat answers by licensed therapists to public questions (MIT)",
    "cpsycound": "CPsyCounD multi-turn Chinese counselling dialogues (CC BY 4.0)",
}


def format_loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _size(n_bytes: int) -> str:
    return f"{n_bytes:,} bytes ({n_bytes / 1024:.1f} KiB)"


def _retrain_text(name: str) -> str:
    from qtune.config import PROJECT_ROOT

    if (PROJECT_ROOT / "configs" / f"{name}.toml").is_file():
        return (f"Retrain with `qtune finetune --config configs/{name}.toml` (all four shipped "
                "adapters: `qtune finetune --all`); the exact settings are in "
                f"`{fmt.TRAINING_CONFIG_FILE}`.")
    return f"The exact settings of this run are in `{fmt.TRAINING_CONFIG_FILE}`."


def _serve_lines(name: str, config: TrainConfig, metrics: dict[str, Any]) -> list[str]:
    if metrics.get("peft_bytes") is None:  # QTHA: no LoRA form
        return ["", "## Serve", "",
                "QTHA's update depends on each token, so it has no LoRA form and vLLM cannot "
                "serve it (docs/method.md says what a vLLM model plugin for it would take).", ""]
    return [
        f"- Exported PEFT LoRA (`{fmt.PEFT_WEIGHTS_FILE}`): {_size(metrics['peft_bytes'])}.",
        "",
        "## Serve",
        "",
        f"This folder is a PEFT LoRA folder (`{fmt.PEFT_CONFIG_FILE}` + "
        f"`{fmt.PEFT_WEIGHTS_FILE}`), so vLLM loads it directly:",
        "",
        "```bash",
        "python -m vllm.entrypoints.openai.api_server --model \"$(qtune model path)\" \\",
        f"    --enable-lora --max-lora-rank {fmt.vllm_max_lora_rank([config.adapter.export_rank])} "
        f"--lora-modules {name}=<this folder>",
        "```",
        "",
        f"then ask for model `{name}`. With transformers: "
        "`PeftModel.from_pretrained(base_model, \"<this folder>\")`.",
        "",
    ]


def _assistant_title(metrics: dict[str, Any], config: TrainConfig) -> str:
    assistant = metrics.get("assistant")
    return f"{assistant['title']} ({assistant['name']})" if assistant else config.task


def _system_prompt_lines(metrics: dict[str, Any]) -> list[str]:
    """The system prompt it was trained with, which the endpoint adds for it."""
    assistant = metrics.get("assistant")
    if not assistant:
        return []
    held_out = metrics.get("held_out", {})
    carved = (f" Held-out rows: {held_out['heldout_rows']} carved from the training file "
              f"(fingerprint {held_out['heldout_fingerprint']})."
              if "heldout_rows" in held_out else "")
    return [f"- System prompt (training and serving): \"{assistant['system_prompt']}\"."
            + carved]


def _preference_lines(metrics: dict[str, Any]) -> list[str]:
    """What a preference-tuned version learnt from, and what it measured before and after."""
    if metrics.get("objective", "sft") == "sft":
        return []
    count = metrics.get("preference_pairs") or metrics.get("preference_ratings")
    kind = "pairs" if "preference_pairs" in metrics else "ratings"

    def shown(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value * scale:.{digits}f}"

    return [f"- Preference tuning: {metrics['objective'].upper()} (beta "
            f"{metrics['beta']:g}) on {count:,} {kind} of `{metrics['preferences']}`, from "
            f"`{metrics.get('start_from') or 'a fresh adapter'}` (also the reference). Held-out "
            f"({metrics['preference_heldout']}): preference accuracy "
            f"{shown(metrics.get('preference_accuracy_before'), 100, 1)}% → "
            f"{shown(metrics.get('preference_accuracy'), 100, 1)}%, preference loss "
            f"{shown(metrics.get('preference_loss_before'))} → "
            f"{shown(metrics.get('preference_loss'))}."]


def card_text(name: str, config: TrainConfig, metrics: dict[str, Any]) -> str:
    trainable = metrics["trainable_parameters"]
    reference = metrics["same_rank_lora_parameters"]
    percent = metrics.get("percent_of_same_rank_lora")
    tokens = metrics["tokens_seen"]
    wall = metrics["wall_seconds"]
    compact_note = get_method(config.method).compact_note
    lines = [
        f"# {name}",
        "",
        f"A {_assistant_title(metrics, config)} adapter for `{metrics['base_model']}`, trained "
        "by qtune.",
        "",
        "## Method",
        "",
        get_method(config.method).describe(config.adapter),
        "",
        "## Base model",
        "",
        f"- `{metrics['base_model']}` (recorded as `base_model_name_or_path`)",
        "",
        "## Data",
        "",
        f"- Task `{config.task}`: {TASK_DATA.get(config.task, config.task)}",
        *_system_prompt_lines(metrics),
        *_preference_lines(metrics),
        f"- Trained on the `{metrics['train_split']}` split"
        + (f" (first {config.max_train_examples} examples)" if config.max_train_examples else "")
        + f"; {metrics['examples_seen']:,} examples seen, loss on assistant tokens only.",
        f"- Evaluation loss on {config.eval_batches * config.batch_size} fixed examples of the "
        f"`{metrics['eval_split']}` split.",
        "",
        "## Budget",
        "",
        f"- {metrics['steps']} optimizer steps x batch {config.batch_size} x grad accumulation "
        f"{config.grad_accum} x {metrics['num_processes']} process(es); sequence length "
        f"{config.seq_len}",
        f"- {tokens:,} tokens processed ({metrics['assistant_tokens_seen']:,} assistant tokens "
        "with loss)",
        f"- AdamW, peak lr {config.lr:g}, {config.warmup} warmup steps then cosine to "
        f"{config.min_lr_ratio:g} x peak, weight decay {config.weight_decay:g}, grad clip "
        f"{config.grad_clip:g}, seed {config.seed}, "
        f"{'bf16 autocast' if config.mixed_precision == 'bf16' else 'fp32'}",
        f"- Wall time {wall / 60:.1f} min ({metrics['seconds_per_step']:.2f} s/step) on "
        f"{metrics['machine']}",
        "",
        "## Results",
        "",
        "| | loss |",
        "|---|---|",
        f"| eval loss before training | {format_loss(metrics['initial_eval_loss'])} |",
        f"| eval loss after training | {format_loss(metrics['final_eval_loss'])} |",
        f"| train loss, last step | {format_loss(metrics['final_train_loss'])} |",
        f"| train loss, mean of last 10 steps | {format_loss(metrics['final_train_loss_mean10'])} |",
        "",
        "Curves: `loss.png`; every step: `log.csv`; all numbers: `metrics.json`.",
        "",
        "## Size",
        "",
        f"- Trainable parameters: {trainable:,}; a rank-{config.adapter.r} LoRA on the same "
        "layers has "
        f"{reference:,} ({percent}% of it)." if percent is not None else
        f"- Trainable parameters: {trainable:,}.",
        f"- Compact form on disk: {_size(metrics['compact_bytes'])} in {compact_note}.",
        *_serve_lines(name, config, metrics),
        _retrain_text(name),
        "",
    ]
    return "\n".join(lines)


def write_card(folder: Path, config: TrainConfig, metrics: dict[str, Any]) -> Path:
    path = folder / fmt.CARD_FILE
    path.write_text(card_text(folder.name, config, metrics))
    return path
