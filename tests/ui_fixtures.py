"""Helpers for the UI tests: a served stack (real vLLM, real adapters) and a free port."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

#: The adapters the project ships; the browser test serves those that exist.
SHIPPED = ("math-qwth", "math-lora", "counselling-qwth", "counselling-lora")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_lora_adapter(model_dir: Path, out_dir: Path, rank: int = 8) -> Path:
    """A real PEFT LoRA adapter of the base model (q_proj, v_proj), saved as vLLM loads it.

    Used only when the shipped adapters are not there yet: the UI needs two different
    served models to compare. The weights are PEFT's initialisation with B scaled away
    from zero by a fixed seed, so the adapter changes the answers a little.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"],
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.01)
    peft_model.save_pretrained(out_dir)
    return out_dir


def collect_adapters(repo_adapters: Path, model_dir: Path, scratch: Path) -> Path:
    """A folder with the shipped adapters that exist, or one generated ``math-lora``."""
    folder = scratch / "adapters"
    folder.mkdir(parents=True, exist_ok=True)
    found = [name for name in SHIPPED
             if (repo_adapters / name / "adapter_model.safetensors").exists()]
    for name in found:
        shutil.copytree(repo_adapters / name, folder / name)
    if not any(name.startswith("math-") for name in found):
        make_lora_adapter(model_dir, folder / "math-lora")
    return folder
