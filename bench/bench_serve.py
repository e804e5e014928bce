"""Serving benchmark: vLLM (qtune serve) against plain transformers + PEFT.

For the base model, one adapter and a round-robin mix of adapters, at each concurrency
(default 1, 4, 16) it sends the same requests (chat prompts, exactly --max-tokens new
tokens each: ``ignore_eos``) and measures time to first token (TTFT) and aggregate
generated tokens per second:

* vLLM: streaming chat completions with ``openai.AsyncOpenAI``, at most C in flight;
* transformers + PEFT (what a user would do without vLLM): C = 1 one request after
  another; C > 1 batches of C prompts through ``generate`` (left padding, the adapters
  of a mixed batch chosen per row with PEFT's ``adapter_names``). TTFT there is the
  time until the batch's first token, measured with a streamer.

vLLM is stopped before the transformers runs so both get the whole machine. Writes a
markdown table and a JSON file::

    python bench/bench_serve.py --out bench/results/serve.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from qtune.config import settings

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May. "
    "How many clips did she sell altogether?",
    "I feel anxious before every exam even when I have studied. What can I do?",
    "A train travels 60 km in 45 minutes. What is its average speed in km/h?",
    "How can I tell a friend that something they said hurt me?",
]


@dataclass
class Result:
    engine: str
    workload: str
    concurrency: int
    requests: int
    tokens: int
    seconds: float
    ttft_median_ms: float
    ttft_p90_ms: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _record(engine: str, workload: str, concurrency: int, requests: int, tokens: int,
            seconds: float, ttfts: list[float]) -> Result:
    """A Result with TTFT median and p90 in ms, printed as its table row as it comes."""
    result = Result(engine, workload, concurrency, requests, tokens, seconds,
                    1000 * statistics.median(ttfts), 1000 * _percentile(ttfts, 0.9))
    print(_row(result), flush=True)
    return result


def _workloads(adapters: list[str], base: str) -> dict[str, list[str]]:
    """Workload name -> model name of each request slot (cycled)."""
    return {
        "base": [base],
        f"adapter ({adapters[0]})": [adapters[0]],
        f"mix of {len(adapters)} adapters": adapters,
    }


# ----- vLLM ------------------------------------------------------------------------------
async def _one_stream(client, model: str, question: str, max_tokens: int) -> tuple[float, int]:
    start = time.perf_counter()
    first = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return first or (time.perf_counter() - start), tokens


async def _vllm_load(
    api_base: str, api_key: str, models: list[str], concurrency: int, requests: int, max_tokens: int
) -> tuple[float, list[float], int]:
    import openai

    client = openai.AsyncOpenAI(base_url=api_base, api_key=api_key, max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)

    async def run(index: int) -> tuple[float, int]:
        async with gate:
            return await _one_stream(
                client, models[index % len(models)], QUESTIONS[index % len(QUESTIONS)], max_tokens
            )

    start = time.perf_counter()
    results = await asyncio.gather(*(run(i) for i in range(requests)))
    elapsed = time.perf_counter() - start
    await client.close()
    return elapsed, [ttft for ttft, _ in results], sum(tokens for _, tokens in results)


#: Every LoRA-capable layer of a Llama in vLLM (its packed names).
ALL_VLLM_LORA_LAYERS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def bench_vllm(args: argparse.Namespace, adapters: list[tuple[str, Path]]) -> list[Result]:
    from qtune.serve.server import ServeConfig, VLLMServer

    config = ServeConfig(
        port=args.port,
        api_key="bench",
        adapters=adapters,
        adapters_dir=None,
        max_model_len=1024,
        log_path=Path(args.out).with_suffix(".vllm.log"),
        dtype=args.dtype,
        cpu_threads_bind=args.threads_bind,
        # "adapters" is qtune serve's choice (the layers the adapters adapt); "all" is
        # vLLM's default, every LoRA-capable layer, for comparison.
        extra_args=["--lora-target-modules", *ALL_VLLM_LORA_LAYERS]
        if args.lora_layers == "all" else [],
    )
    results = []
    with VLLMServer(config) as server:
        # Warm up every model once (the first request to an adapter loads it).
        for model in server.served_models:
            asyncio.run(_vllm_load(server.api_base, "bench", [model], 1, 1, 4))
        for workload, models in _workloads([a for a, _ in adapters], server.base_name).items():
            for concurrency in args.concurrency:
                elapsed, ttfts, tokens = asyncio.run(
                    _vllm_load(
                        server.api_base,
                        "bench",
                        models,
                        concurrency,
                        args.requests,
                        args.max_tokens,
                    )
                )
                results.append(_record("vLLM", workload, concurrency, args.requests, tokens,
                                       elapsed, ttfts))
    return results


# ----- transformers + PEFT ----------------------------------------------------------------
class _FirstTokenTimer:
    """A generate() streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, _value) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:  # call 1 is the prompt
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _adapter_context(model, models: list[str]):
    """How a user would pick the adapter: none for the base, set_adapter for one,
    PEFT's per-row ``adapter_names`` for a mixed batch."""
    import contextlib

    if models == ["__base__"]:
        return model.disable_adapter()
    if len(models) == 1:
        model.set_adapter(models[0])
    return contextlib.nullcontext()


def bench_transformers(args: argparse.Namespace, adapters: list[tuple[str, Path]]) -> list[Result]:
    import torch
    from peft_server import load_peft  # bench/ is on the path when this runs as a script

    model, tokenizer = load_peft(adapters, args.threads, padding_side="left")
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in QUESTIONS
    ]
    results = []
    for workload, models in _workloads([a for a, _ in adapters], "__base__").items():
        for concurrency in args.concurrency:
            ttfts, tokens = [], 0
            start = time.perf_counter()
            for first in range(0, args.requests, concurrency):
                rows = range(first, min(first + concurrency, args.requests))
                batch = tokenizer(
                    [prompts[i % len(prompts)] for i in rows],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                )
                timer = _FirstTokenTimer()
                batch_start = time.perf_counter()
                with torch.no_grad(), _adapter_context(model, models):
                    extra = (
                        {"adapter_names": [models[i % len(models)] for i in rows]}
                        if len(models) > 1
                        else {}
                    )
                    output = model.generate(
                        **batch,
                        max_new_tokens=args.max_tokens,
                        min_new_tokens=args.max_tokens,
                        do_sample=False,
                        pad_token_id=tokenizer.eos_token_id,
                        streamer=timer,
                        **extra,
                    )
                ttfts += [(timer.first or time.perf_counter()) - batch_start] * len(rows)
                tokens += (output.shape[1] - batch["input_ids"].shape[1]) * len(rows)
            elapsed = time.perf_counter() - start
            results.append(_record("transformers+PEFT", workload, concurrency, args.requests,
                                   tokens, elapsed, ttfts))
    return results


# ----- report ----------------------------------------------------------------------------
HEADER = (
    "| engine | workload | concurrency | tokens/s | TTFT median ms | TTFT p90 ms |\n"
    "|---|---|---|---|---|---|"
)


def _row(r: Result) -> str:
    return (
        f"| {r.engine} | {r.workload} | {r.concurrency} | {r.tokens_per_s:.1f} | "
        f"{r.ttft_median_ms:.0f} | {r.ttft_p90_ms:.0f} |"
    )


def _ratios(results: list[Result], top: int) -> list[str]:
    def find(engine: str, prefix: str, concurrency: int) -> Result | None:
        return next(
            (
                r
                for r in results
                if r.engine == engine
                and r.concurrency == concurrency
                and r.workload.startswith(prefix)
            ),
            None,
        )

    lines = []
    base, one, mix = (find("vLLM", p, top) for p in ("base", "adapter", "mix"))
    if base and one and mix:
        lines.append(
            f"- vLLM at concurrency {top}: one adapter {one.tokens_per_s / base.tokens_per_s:.2f}x "
            f"the base's throughput, mixed adapters {mix.tokens_per_s / base.tokens_per_s:.2f}x."
        )
    for prefix in ("base", "adapter", "mix"):
        served, plain = find("vLLM", prefix, top), find("transformers+PEFT", prefix, top)
        if served and plain:
            lines.append(
                f"- {served.workload}, concurrency {top}: vLLM "
                f"{served.tokens_per_s / plain.tokens_per_s:.2f}x transformers+PEFT "
                f"throughput."
            )
    return lines


def cpu_text() -> str:
    """The CPU and the flags that decide CPU serving speed (vector width, bf16)."""
    from qtune.hardware import speed_flags_text

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, flags: {speed_flags_text()}"


def write_report(results: list[Result], args: argparse.Namespace, adapters_note: str) -> str:
    lines = [
        f"CPU: {cpu_text()}.",
        "",
        f"{args.requests} requests x {args.max_tokens} new tokens per setting; adapters: "
        f"{adapters_note}; vLLM dtype {args.dtype}, CPU threads bind {args.threads_bind}, "
        f"LoRA layers: {args.lora_layers}.",
        "",
        HEADER,
        *(_row(r) for r in results),
        "",
        *_ratios(results, max(args.concurrency)),
    ]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(
        json.dumps([asdict(r) | {"tokens_per_s": r.tokens_per_s} for r in results], indent=2) + "\n"
    )
    return text


def _random_adapters(folder: Path, count: int = 2) -> list[tuple[str, Path]]:
    """Stand-ins with random lora_B when the shipped adapters are not trained yet."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from qtune.model import resolve_model

    made = []
    for index in range(count):
        torch.manual_seed(index)
        model = AutoModelForCausalLM.from_pretrained(resolve_model(None), dtype=torch.bfloat16)
        peft_model = get_peft_model(
            model,
            LoraConfig(
                r=8,
                lora_alpha=16,
                target_modules=[
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "gate_proj",
                    "up_proj",
                    "down_proj",
                ],
            ),
        )
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.1)
        path = folder / f"random-{index}"
        peft_model.save_pretrained(path)
        made.append((path.name, path))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="markdown report path (JSON beside it)")
    parser.add_argument("--requests", type=int, default=16, help="requests per setting")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 4, 16],
        help="requests in flight (vLLM) / batch size (transformers)",
    )
    parser.add_argument("--port", type=int, default=8011, help="port for the vLLM server")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for transformers")
    parser.add_argument(
        "--adapters",
        type=Path,
        default=None,
        help="folder of adapters (default: the shipped ones, else two random stand-ins)",
    )
    parser.add_argument("--skip-transformers", action="store_true", help="vLLM only")
    parser.add_argument("--lora-layers", choices=("adapters", "all"), default="adapters",
                        help="vLLM LoRA on the layers the adapters adapt (qtune serve's "
                        "default) or on every LoRA-capable layer (vLLM's default)")
    parser.add_argument("--dtype", default="auto-hw",
                        help="vLLM --dtype (default auto-hw: bf16 only where the hardware has it)")
    parser.add_argument("--threads-bind", default="auto",
                        help="as `qtune serve --cpu-threads-bind` (default auto)")
    args = parser.parse_args()

    from qtune.serve.adapters import discover_adapters

    folder = args.adapters or settings().adapters_dir
    adapters = discover_adapters(folder) if folder.is_dir() else []
    with tempfile.TemporaryDirectory() as tmp:
        note = ", ".join(name for name, _ in adapters)
        if not adapters:
            adapters = _random_adapters(Path(tmp))
            note = "two random rank-8 stand-ins (all linear layers)"
        print(HEADER, flush=True)
        results = bench_vllm(args, adapters)
        if not args.skip_transformers:
            results += bench_transformers(args, adapters)
        print(write_report(results, args, note))


if __name__ == "__main__":
    main()
