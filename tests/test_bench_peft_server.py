"""The transformers + PEFT baseline of bench/bench_serve_load.py decodes what `generate`
decodes: a left-padded batch with one adapter per row, token for token (float32)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_batched_decoding_matches_generate():
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qtune.model import resolve_model

    sys.path.insert(0, str(REPO / "bench"))
    import peft_server

    path = resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(REPO / "adapters" / "math-qwth"),
                                      adapter_name="math-qwth").eval()
    questions = [("What is 12 times 4?", "math-qwth"), ("Hi there", peft_server.BASE),
                 ("A train travels 60 miles an hour for 2.5 hours. How far?", "math-qwth")]
    prompts = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                                       tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False).input_ids for q, _ in questions]
    expected = []
    for ids, (_, adapter) in zip(prompts, questions, strict=True):
        with torch.no_grad():
            if adapter == peft_server.BASE:
                with model.disable_adapter():
                    out = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)
            else:
                out = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)
        expected.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))

    worker = peft_server.BatchingWorker.__new__(peft_server.BatchingWorker)  # no thread
    worker.model, worker.tokenizer, worker.max_batch, worker.eos_ids = model, tokenizer, 8, {2}
    loop = asyncio.new_event_loop()
    jobs = [peft_server.Job(ids, adapter, 10, False, loop)
            for ids, (_, adapter) in zip(prompts, questions, strict=True)]
    worker._generate(jobs)
    loop.run_until_complete(asyncio.sleep(0.05))
    got = []
    for job in jobs:
        pieces = []
        while not job.out.empty():
            pieces.append(job.out.get_nowait())
        assert pieces[-1] is None  # every stream is closed
        got.append("".join(p for p in pieces if isinstance(p, str)))
    loop.close()
    assert got == expected
    assert peft_server._plain_messages([{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]) == [
        {"role": "user", "content": "ab"}]
