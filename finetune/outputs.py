"""What a finished run leaves in its folder: the adapter (the method's own form and its PEFT
export), log.csv, metrics.json, the loss plot and the model card."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import torch
from qtune.finetune.checkpoint import RunState
from qtune.finetune.config import TrainConfig
from qtune.finetune.methods import get_method

from qtune import adapter_format as fmt
from qtune.hardware import cpu_class

log = logging.getLogger(__name__)


def machine_description(accelerator) -> str:
    cores = os.cpu_count() or 0
    device = str(accelerator.device)
    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    return (f"{platform.machine()} with {cores} CPU cores ({cpu_class()}), {device}, "
            f"{accelerator.num_processes} process(es) x {torch.get_num_threads()} torch threads")


def run_metrics(config: TrainConfig, state: RunState, n_trainable: int, lora_reference: int,
             base_name: str, accelerator) -> dict[str, Any]:
    trained = [r for r in state.history if r.get("train_loss") is not None]
    evals = [r for r in state.history if r.get("eval_loss") is not None]
    tail = [r["train_loss"] for r in trained[-10:]]
    world = accelerator.num_processes
    return {
        "task": config.task, "method": config.method, "base_model": base_name,
        "steps": state.step, "batch_size": config.batch_size, "grad_accum": config.grad_accum,
        "num_processes": world, "seq_len": config.seq_len,
        "examples_seen": state.step * config.batch_size * config.grad_accum * world,
        "tokens_seen": state.tokens, "assistant_tokens_seen": state.label_tokens,
        "train_split": "train", "eval_split": config.eval_split,
        "initial_eval_loss": state.history[0]["eval_loss"]
        if state.history and state.history[0]["step"] == 0 else None,
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "final_train_loss": trained[-1]["train_loss"] if trained else None,
        "final_train_loss_mean10": sum(tail) / len(tail) if tail else None,
        "wall_seconds": round(state.elapsed, 1),
        "seconds_per_step": round(state.elapsed / max(1, len(trained)), 3),
        "machine": machine_description(accelerator),
        "trainable_parameters": n_trainable,
        "same_rank_lora_parameters": lora_reference,
        "percent_of_same_rank_lora": round(100.0 * n_trainable / lora_reference, 4)
        if lora_reference else None,
    }


def assistant_record(config: TrainConfig, held_out: dict[str, Any]) -> dict[str, Any]:
    """What the adapter records of its assistant (the server and the UI read it) and of its
    held-out set (a carved one by size and fingerprint)."""
    from qtune.assistants import RecordedAssistant, assistant_of_task, get_assistant

    assistant = (get_assistant(config.assistant) if config.assistant
                 else assistant_of_task(config.task))
    record: dict[str, Any] = {"held_out": held_out}
    if assistant is not None:
        record["assistant"] = RecordedAssistant.of(assistant).as_dict()
    return record


def write_outputs(model, config: TrainConfig, output: Path, base_name: str,
                   metrics: dict[str, Any], state: RunState) -> None:
    from qtune.finetune.card import write_card
    from qtune.finetune.plots import plot_losses

    saved = get_method(config.method).save(model, output, base_name)
    metrics["compact_bytes"], metrics["compact_path"] = saved.compact_bytes, saved.compact_path
    peft = output / fmt.PEFT_WEIGHTS_FILE
    metrics["peft_bytes"] = peft.stat().st_size if peft.is_file() else None
    fmt.write_log(state.history, output / fmt.LOG_FILE)
    fmt.write_json(output / fmt.METRICS_FILE, metrics)
    plot_losses(state.history, output / fmt.LOSS_PLOT_FILE,
                title=f"{config.task} / {config.method}")
    write_card(output, config, metrics)  # after PEFT's save, which writes its own README
    log.info("adapter written to %s", output)
