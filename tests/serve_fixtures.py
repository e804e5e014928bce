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


def chat_prompt_ids(model_path: str | Path, messages: list[dict]) -> list[int]:
    """The token ids of ``messages`` under the model's chat template, as vLLM renders them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def served_greedy_ids(client, model: str, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """The served model's greedy continuation of ``prompt_ids``, as token ids."""
    return served_greedy_logprobs(client, model, prompt_ids, max_tokens)[0]


def peft_greedy_ids(model_path: str | Path, adapter: Path | None, prompt_ids: list[int],
                    max_tokens: int, dtype: str) -> list[int]:
    """transformers + PEFT's greedy continuation (the base model's when ``adapter`` is None),
    computed in the dtype vLLM serves in: the reference a served adapter must match."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        output = model.eval().generate(torch.tensor([prompt_ids]), max_new_tokens=max_tokens,
                                       do_sample=False, pad_token_id=model.config.eos_token_id)
    return output[0, len(prompt_ids):].tolist()


def served_greedy_logprobs(client, model: str, prompt_ids: list[int],
                           max_tokens: int) -> tuple[list[int], list[float]]:
    """The served model's greedy continuation of ``prompt_ids`` and each token's log-prob."""
    reply = client.completions.create(model=model, prompt=prompt_ids, max_tokens=max_tokens,
                                      temperature=0, logprobs=1,
                                      extra_body={"return_token_ids": True})
    choice = reply.choices[0]
    return list(choice.model_extra["token_ids"]), list(choice.logprobs.token_logprobs)


def peft_token_logprobs(model_path: str | Path, adapter: Path, prompt_ids: list[int],
                        token_ids: list[int]) -> tuple[list[float], list[float]]:
    """The log-probs transformers + PEFT give ``token_ids`` after ``prompt_ids`` in float32,
    with the adapter and without it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    sequence = torch.tensor([prompt_ids + token_ids])
    targets = sequence[0, len(prompt_ids):]

    def logprobs() -> list[float]:
        logits = model(input_ids=sequence).logits[0, len(prompt_ids) - 1:-1]
        return logits.log_softmax(-1).gather(1, targets[:, None])[:, 0].tolist()

    with torch.no_grad():
        adapted = logprobs()
        with model.disable_adapter():
            plain = logprobs()
    return adapted, plain
