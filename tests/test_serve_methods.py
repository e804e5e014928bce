"""Every compact-adapter variant of the frontier study serves through `qtune serve`.

Each is trained for a few steps with the study's own settings (VeRA, LoRA-XS at both ranks,
LoRA at ranks 2 and 4, QWTH at its two other sizes) on the real embedded model, exported by
the trainer as a PEFT LoRA, and served by one real vLLM server beside the base model. Each
must be listed, answer a chat, and give vLLM's greedy tokens equal to transformers + PEFT's
on its exported folder, with the same log-probs, which differ from the base model's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qtune.finetune.config import TrainConfig
from qtune.finetune.train import train
from qtune.study.config import STUDY_METHODS
from serve_fixtures import (
    chat_prompt_ids,
    peft_greedy_ids,
    peft_token_logprobs,
    served_greedy_logprobs,
)
from ui_fixtures import free_port

pytestmark = [pytest.mark.slow]

#: The adapters the frontier study added (its lora, lora-r1 and qwth are served elsewhere).
NEW_VARIANTS = ("vera", "lora-xs", "lora-xs-r8", "lora-xs-r16", "lora-r2", "lora-r4", "qwth-tt2",
                "qwth-tt8")
PROMPT = [{"role": "user", "content": "Tom has 3 boxes of 12 pencils. How many pencils?"}]
TOKENS = 24


@pytest.fixture(scope="module")
def exported(tmp_path_factory, embedded_model, data_dir) -> list[tuple[str, Path]]:
    """(served name, run folder) of each variant after a short real training run at its
    method's default (tuned) rate."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("frontier-adapters")
    folders = []
    for variant in NEW_VARIANTS:
        folder = root / f"math-{variant}"
        config = TrainConfig.from_dict({
            **STUDY_METHODS[variant], "task": "math", "steps": 3, "batch_size": 2,
            "seq_len": 96, "warmup": 0, "eval_every": 0, "eval_batches": 1, "save_every": 0,
            "mixed_precision": "no", "output": str(folder)}).validate()
        train(config)
        folders.append((f"math-{variant}", folder))
    torch.set_num_threads(threads)
    return folders


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    from qtune.serve.server import ServeConfig, VLLMServer

    config = ServeConfig(port=free_port(), api_key=None, adapters=exported, adapters_dir=None,
                         max_model_len=512, dtype="float32", crisis_screen="off",
                         log_path=tmp_path_factory.mktemp("logs") / "vllm.log")
    with VLLMServer(config) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.api_base, api_key="none", max_retries=0)


def test_every_variant_is_listed_and_answers_a_chat(client, server, exported) -> None:
    listed = {model.id for model in client.models.list().data}
    assert listed == {server.base_name} | {name for name, _ in exported}
    for name, _ in exported:
        reply = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=8,
                                               temperature=0)
        assert reply.choices[0].message.content.strip(), name


def test_every_variant_serves_its_exported_lora_exactly(client, server, exported) -> None:
    """vLLM's greedy tokens and their log-probs equal transformers + PEFT's on the export,
    in float32, and differ from the base model's log-probs for the same tokens (an adapter
    that vLLM ignored would match those instead)."""
    import torch

    prompt_ids = chat_prompt_ids(server.model_path, PROMPT)
    torch.set_num_threads(1)
    for name, folder in exported:
        tokens, served = served_greedy_logprobs(client, name, prompt_ids, TOKENS)
        adapted, plain = peft_token_logprobs(server.model_path, folder, prompt_ids, tokens)
        assert tokens == peft_greedy_ids(server.model_path, folder, prompt_ids, TOKENS,
                                         "float32"), name
        assert max(abs(s - a) for s, a in zip(served, adapted, strict=True)) < 5e-4, name
        moved = max(abs(a - p) for a, p in zip(adapted, plain, strict=True))
        assert moved > 1e-2, f"{name} barely moves the base model's log-probs ({moved:.1e})"
