"""Adapters for the serving tests: header-only fakes and real PEFT adapters.

``write_fake_adapter`` writes the two files of a PEFT LoRA folder with numpy (no torch),
for the fast validation tests. ``make_peft_adapter`` builds a real PEFT LoRA on the real
base model with random non-zero ``lora_B`` (PEFT initialises it to zero, which would
make the adapter a no-op), for the server tests when the shipped adapters are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SMALL_LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 128,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
}


def write_small_model_config(folder: Path, config: dict | None = None) -> Path:
    """A folder holding only a Llama config.json (enough for command() and validation)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or SMALL_LLAMA))
    return folder


def _lora_shapes(config: dict, module: str, r: int) -> tuple[tuple[int, int], tuple[int, int]]:
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q_out = config["num_attention_heads"] * head_dim
    kv_out = config["num_key_value_heads"] * head_dim
    in_out = {
        "q_proj": (hidden, q_out), "k_proj": (hidden, kv_out), "v_proj": (hidden, kv_out),
        "o_proj": (q_out, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }[module]
    return (r, in_out[0]), (in_out[1], r)


def write_fake_adapter(
    folder: Path,
    base_config: dict,
    r: int = 8,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    **config_overrides,
) -> Path:
    """A PEFT-layout LoRA folder whose tensor shapes fit ``base_config``."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": list(targets),
              "bias": "none", "modules_to_save": None, "task_type": "CAUSAL_LM"}
    config.update(config_overrides)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    tensors = {}
    for layer in range(base_config["num_hidden_layers"]):
        for module in targets:
            group = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            prefix = f"base_model.model.model.layers.{layer}.{group}.{module}"
            shape_a, shape_b = _lora_shapes(base_config, module, r)
            tensors[f"{prefix}.lora_A.weight"] = np.zeros(shape_a, dtype=np.float32)
            tensors[f"{prefix}.lora_B.weight"] = np.zeros(shape_b, dtype=np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def make_peft_adapter(base_dir: Path, out_dir: Path, seed: int, r: int = 8,
                      scale: float = 0.1) -> Path:
    """A real PEFT LoRA (q,k,v,o + MLP) on the real base model, lora_B random."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16)
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                        "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale)
    peft_model.save_pretrained(out_dir)
    return out_dir
