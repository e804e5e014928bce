"""What the endpoint's adapter system prompt costs per chat request (serve/guard.py).

Two figures, on a quiet machine:

1. the guard's own work on a request without a system message: parse the body, put the
   adapter's prompt first, encode it again and fix Content-Length (timed in process);
2. time to first token through a real `qtune serve` with the adapter, for three kinds of
   requests interleaved: the guard adds the prompt, the client sends the same prompt
   itself, and a one-word system message (what the prompt's own length costs).

    .venv/bin/python bench/bench_adapter_prompt.py --adapter math-lora=adapters/math-lora
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from qtune.serve.guard import add_system_prompt, with_content_length

from qtune.assistants import adapter_system_prompt
from qtune.hardware import cpu_flags

QUESTION = "A shop sells pens at $3 each. How much do 7 pens cost?"


def rewrite_us(prompt: str, rounds: int) -> list[float]:
    """Microseconds per request of the guard's rewrite of one chat body."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": QUESTION}],
                       "max_tokens": 64, "stream": True}).encode()
    scope = {"headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        request = json.loads(body)
        if add_system_prompt(request, prompt):
            rewritten = json.dumps(request).encode()
            with_content_length(scope, len(rewritten))
        timings.append(1e6 * (time.perf_counter() - started))
    return timings


def first_token_ms(client, model: str, messages: list[dict]) -> float:
    started = time.perf_counter()
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=1,
                                            temperature=0, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content is not None:
            break
    elapsed = 1000 * (time.perf_counter() - started)
    stream.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", required=True, metavar="NAME=PATH",
                        help="the adapter to serve and ask, e.g. math-lora=adapters/math-lora")
    parser.add_argument("--requests", type=int, default=30, help="requests of each kind")
    parser.add_argument("--rounds", type=int, default=20000, help="in-process rewrites timed")
    args = parser.parse_args(argv)
    name, _, path = args.adapter.partition("=")
    prompt = adapter_system_prompt(Path(path), name)
    if not prompt:
        parser.error(f"{path} records no system prompt")
    rewrite = rewrite_us(prompt, args.rounds)

    from openai import OpenAI
    from qtune.eval.evaluate import free_port
    from qtune.serve.server import ServeConfig, VLLMServer

    server = VLLMServer(ServeConfig(port=free_port(), adapters=[(name, Path(path))],
                                    adapters_dir=None))
    kinds = {"guard adds the prompt": [],
             "client sends the same prompt": [{"role": "system", "content": prompt}],
             "one-word system message": [{"role": "system", "content": "Answer."}]}
    ttft: dict[str, list[float]] = {kind: [] for kind in kinds}
    with server:
        server.start(wait=True)
        client = OpenAI(base_url=server.api_base, api_key="none")
        question = [{"role": "user", "content": QUESTION}]
        for system in kinds.values():  # warm-up: one of each, not counted
            first_token_ms(client, name, system + question)
        for _ in range(args.requests):  # interleaved, so drift hits every kind alike
            for kind, system in kinds.items():
                ttft[kind].append(first_token_ms(client, name, system + question))
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "avx2", "amx")))
    print(f"machine: {platform.machine()}, CPU flags: {' '.join(flags)}; adapter {name}, "
          f"prompt of {len(prompt.split())} words")
    print(f"guard's rewrite: median {statistics.median(rewrite):.1f} µs "
          f"({args.rounds} rounds)")
    for kind, values in ttft.items():
        print(f"time to first token, {kind}: median {statistics.median(values):.1f} ms "
              f"({len(values)} requests)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
