"""transformers + PEFT served the way a user would without vLLM: a baseline for
`bench/bench_serve_load.py`.

An OpenAI-compatible `/v1/chat/completions` (streaming) and `/v1/models` over one base
model with every adapter loaded in PEFT. Requests wait in a queue; a worker takes whatever
is waiting (up to ``--max-batch``), left-pads it into one batch with each row's adapter
(PEFT's per-row ``adapter_names``, ``__base__`` for the base model), prefills, then
decodes greedily one token at a time for the whole batch, streaming each row's text as it
comes. Rows that finish early wait for the batch (static batching: what a plain
``generate`` loop does); new requests wait for the next batch.

    python bench/peft_server.py --port 8012
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# At module level: FastAPI resolves the handlers' (string) annotations in this namespace.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

BASE = "__base__"


@dataclass
class Job:
    prompt_ids: list[int]
    adapter: str
    max_tokens: int
    ignore_eos: bool
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = field(default_factory=asyncio.Queue)

    def emit(self, item) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class BatchingWorker:
    def __init__(self, model, tokenizer, max_batch: int) -> None:
        self.model, self.tokenizer, self.max_batch = model, tokenizer, max_batch
        # The chat template ends a turn with the generation config's EOS (<|im_end|>),
        # which need not be the tokenizer's own.
        configured = model.generation_config.eos_token_id
        self.eos_ids = {tokenizer.eos_token_id, *(configured if isinstance(configured, list)
                                                   else [configured])} - {None}
        self.jobs: queue.Queue[Job] = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while len(batch) < self.max_batch and not self.jobs.empty():
                batch.append(self.jobs.get_nowait())
            try:
                self._generate(batch)
            except Exception as error:  # report to every waiting client, keep serving
                for job in batch:
                    job.emit(error)

    def _generate(self, batch: list[Job]) -> None:
        import torch

        width = max(len(job.prompt_ids) for job in batch)
        pad = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in batch])
        mask = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids)
                             for j in batch])
        names = [job.adapter for job in batch]
        generated: list[list[int]] = [[] for _ in batch]
        sent = [""] * len(batch)
        done = [False] * len(batch)
        past, step_ids = None, ids
        # Left padding: positions count real tokens only, as `generate` computes them.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            for _ in range(max(job.max_tokens for job in batch)):
                out = self.model(input_ids=step_ids, attention_mask=mask, past_key_values=past,
                                 position_ids=positions, use_cache=True, adapter_names=names)
                past = out.past_key_values
                step_ids = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
                mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
                positions = mask.sum(-1, keepdim=True) - 1
                for row, job in enumerate(batch):
                    if done[row]:
                        continue
                    token = int(step_ids[row, 0])
                    generated[row].append(token)
                    text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
                    job.emit(text[len(sent[row]):])
                    sent[row] = text
                    eos = token in self.eos_ids and not job.ignore_eos
                    if eos or len(generated[row]) >= job.max_tokens:
                        done[row] = True
                        job.emit(None)
                if all(done):
                    break
        for row, job in enumerate(batch):
            if not done[row]:
                job.emit(None)


def build_app(worker: BatchingWorker, tokenizer, names: list[str], base_name: str):
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": n, "object": "model"}
                                           for n in [base_name, *names]]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model = body.get("model", base_name)
        if model not in (base_name, *names):
            return JSONResponse({"error": f"unknown model {model!r}"}, status_code=404)
        prompt = tokenizer.apply_chat_template(_plain_messages(body["messages"]),
                                               tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        job = Job(prompt_ids, BASE if model == base_name else model,
                  int(body.get("max_completion_tokens") or body.get("max_tokens") or 64),
                  bool(body.get("ignore_eos")), asyncio.get_running_loop())
        worker.jobs.put(job)
        return StreamingResponse(_sse(job, model), media_type="text/event-stream")

    return app


def _plain_messages(messages: list[dict]) -> list[dict]:
    """OpenAI content may be a list of parts (vLLM's benchmark sends it so): keep the text."""
    def text(content) -> str:
        if isinstance(content, str):
            return content
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")

    return [{"role": m["role"], "content": text(m["content"])} for m in messages]


async def _sse(job: Job, model: str):
    request_id, count = f"chatcmpl-{uuid.uuid4().hex}", 0
    while True:
        piece = await job.out.get()
        if piece is None:
            break
        if isinstance(piece, Exception):
            yield f"data: {json.dumps({'error': str(piece)})}\n\n"
            return
        count += 1
        chunk = {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": model, "choices": [{"index": 0, "delta": {"content": piece}}]}
        yield f"data: {json.dumps(chunk)}\n\n"
    usage = {"prompt_tokens": len(job.prompt_ids), "completion_tokens": count}
    yield f"data: {json.dumps({'id': request_id, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


def load_peft(adapters: list[tuple[str, Path]], threads: int, padding_side: str = "right"):
    """The base model with every adapter loaded in PEFT, as a user would without vLLM
    (also used by bench_serve.py); bf16 only where the hardware has it, as `qtune serve`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qtune.hardware import native_bf16
    from qtune.model import resolve_model

    torch.set_num_threads(threads)
    base_dir = resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, padding_side=padding_side)
    dtype = torch.bfloat16 if native_bf16() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    model = PeftModel.from_pretrained(model, str(adapters[0][1]), adapter_name=adapters[0][0])
    for name, path in adapters[1:]:
        model.load_adapter(str(path), adapter_name=name)
    return model.eval(), tokenizer


def main() -> None:
    import uvicorn

    from qtune.config import settings
    from qtune.model import served_name

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8012)
    parser.add_argument("--adapters", type=Path, default=settings().adapters_dir)
    parser.add_argument("--max-batch", type=int, default=16, help="most requests in one batch")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    from qtune.serve.adapters import discover_adapters

    adapters = discover_adapters(args.adapters)
    model, tokenizer = load_peft(adapters, args.threads)
    names = [name for name, _ in adapters]
    worker = BatchingWorker(model, tokenizer, args.max_batch)
    app = build_app(worker, tokenizer, names, served_name(None))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
