"""Serving under a realistic load, measured with vLLM's own load generator.

Builds a custom dataset from the real test questions (GSM8K test and CounselChat test:
the prompt is the question, the answer length is the reference answer's token count,
capped), then runs vLLM's `bench serve` (``vllm.benchmarks.serve``: Poisson arrivals at
each ``--rates`` value, ``--lora-modules`` over every adapter and the base model, round
robin) against

* ``vllm``: `qtune serve` (the base model and every adapter in one vLLM server), and/or
* ``peft``: transformers + PEFT behind a queue that batches whatever is waiting
  (`bench/peft_server.py`), the way a user would serve adapters without vLLM,

each alone on the machine. Reports TTFT, TPOT and ITL at p50/p99, throughput, and goodput
under ``--goodput`` (vLLM's SLO syntax), with the CPU's flags::

    python bench/bench_serve_load.py --engines vllm peft --rates 0.5 1 2 --out test-artifacts/load.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

METRICS = ("ttft", "tpot", "itl")


def build_dataset(path: Path, per_task: int, max_output: int) -> int:
    """``{"prompt", "output_tokens"}`` rows, math and counselling alternating."""
    from qtune.data.datasets import load_counselchat, load_gsm8k
    from transformers import AutoTokenizer

    from qtune.model import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    length = lambda text: min(max_output, len(tokenizer(text).input_ids))  # noqa: E731
    math = [(m.question, length(m.solution)) for m in load_gsm8k("test", limit=per_task)]
    counsel = [(c.question or c.title, length(c.answer))
               for c in load_counselchat("test", limit=per_task)]
    rows = [row for pair in zip(math, counsel, strict=False) for row in pair]
    path.write_text("".join(json.dumps({"prompt": p, "output_tokens": n}) + "\n"
                            for p, n in rows))
    return len(rows)


def wait_ready(base_url: str, process: subprocess.Popen, log: Path,
               timeout_s: float = 600) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"the server exited with {process.returncode}:\n{tail}")
        try:
            reply = httpx.get(f"{base_url}/v1/models", timeout=5,
                              headers={"Authorization": "Bearer bench"})
            if reply.status_code == 200:
                return [m["id"] for m in reply.json()["data"]]
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(f"{base_url} did not answer within {timeout_s:.0f} s")


#: The engines a run can start: `qtune serve` (vLLM with qtune's CPU LoRA path), the same
#: with vLLM's own CPU LoRA ops (QTUNE_CPU_LORA=vllm, serve/lora_cpu.py), and the
#: transformers + PEFT queue (bench/peft_server.py).
ENGINES = {"vllm": "qtune", "vllm-own-lora-ops": "vllm", "peft": None}


def start_engine(engine: str, port: int, log: Path, vllm_args: list[str]) -> subprocess.Popen:
    here = Path(__file__).parent
    command = ([sys.executable, str(here / "peft_server.py"), "--port", str(port)]
               if engine == "peft" else
               [sys.executable, "-m", "qtune.cli", "serve", "--port", str(port),
                "--api-key", "bench", *(["--", *vllm_args] if vllm_args else [])])
    env = dict(os.environ)
    if ENGINES[engine]:
        env["QTUNE_CPU_LORA"] = ENGINES[engine]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)


def pick_models(models: list[str], mix: str) -> list[str]:
    """The served models a run sends to, round robin: the base model (listed first), the
    adapters, or all of them."""
    return {"base": models[:1], "adapters": models[1:], "all": models}[mix]


def run_rate(args: argparse.Namespace, base_url: str, models: list[str], rate: float,
             dataset: Path, result_dir: Path, engine: str) -> dict:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from qtune.model import resolve_model

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    name = f"{engine}-{models[0] if len(models) == 1 else len(models)}-rate{rate:g}.json"
    bench_args = parser.parse_args([
        "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
        "--base-url", base_url, "--model", models[0], "--tokenizer", resolve_model(None),
        "--dataset-name", "custom", "--dataset-path", str(dataset),
        "--custom-output-len", "-1", "--skip-chat-template",
        "--num-prompts", str(args.num_prompts), "--request-rate", str(rate),
        "--seed", "0", "--temperature", "0", "--ignore-eos",
        "--lora-modules", *models, "--lora-assignment", "round-robin",
        "--percentile-metrics", ",".join(METRICS), "--metric-percentiles", "50,99",
        "--goodput", *args.goodput,
        *(["--max-concurrency", str(args.max_concurrency)] if args.max_concurrency else []),
        "--save-result", "--result-dir", str(result_dir), "--result-filename", name,
    ])
    bench_main(bench_args)
    return json.loads((result_dir / name).read_text())


def row(engine: str, mix: str, rate: float, result: dict) -> str:
    cells = [engine, mix, f"{rate:g}", f"{result['completed']}/{result['num_prompts']}",
             f"{result['output_throughput']:.1f}",
             f"{result.get('request_goodput') or 0:.2f}"]
    for metric in METRICS:
        cells.append(f"{result[f'p50_{metric}_ms']:.0f} / {result[f'p99_{metric}_ms']:.0f}")
    return "| " + " | ".join(cells) + " |"


def adapter_cost_summary(results: dict[tuple[str, float], dict[str, list[dict]]]) -> list[str]:
    """Adapters against the base model, each engine and rate: medians over the repeats of
    output tokens/s and TPOT p50, and their ratios."""
    lines = ["", "| engine | rate | runs | base tok/s | adapters tok/s | adapters ÷ base | "
             "base TPOT p50 ms | adapters TPOT p50 ms | adapters ÷ base |", "|---|---|---|---|---|---|---|---|---|"]
    for (engine, rate), by_mix in results.items():
        if "base" not in by_mix or "adapters" not in by_mix:
            continue
        tok = {mix: statistics.median(r["output_throughput"] for r in by_mix[mix])
               for mix in ("base", "adapters")}
        tpot = {mix: statistics.median(r["p50_tpot_ms"] for r in by_mix[mix])
                for mix in ("base", "adapters")}
        lines.append(f"| {engine} | {rate:g} | {len(by_mix['base'])} | {tok['base']:.1f} | "
                     f"{tok['adapters']:.1f} | {tok['adapters'] / tok['base']:.2f} | "
                     f"{tpot['base']:.0f} | {tpot['adapters']:.0f} | "
                     f"{tpot['adapters'] / tpot['base']:.2f} |")
    return lines if len(lines) > 3 else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="markdown report (JSON beside)")
    parser.add_argument("--engines", nargs="+", choices=tuple(ENGINES), default=["vllm", "peft"])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                        help="mean requests per second (Poisson arrivals); inf sends all at "
                        "once, for a closed loop with --max-concurrency")
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="at most this many requests in flight (vLLM's --max-concurrency)")
    parser.add_argument("--num-prompts", type=int, default=32, help="requests per rate")
    parser.add_argument("--mixes", nargs="+", choices=("all", "base", "adapters"),
                        default=["all"], help="which served models the requests go to: "
                        "all (base and adapters), base only, adapters only; round robin")
    parser.add_argument("--per-task", type=int, default=32, help="test questions per task")
    parser.add_argument("--max-output", type=int, default=128,
                        help="cap on a request's answer tokens (the reference answer's length)")
    parser.add_argument("--goodput", nargs="+", default=["ttft:5000", "tpot:250"],
                        help="SLOs in ms, vLLM's KEY:VALUE syntax (default ttft:5000 tpot:250)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the mixes this many times, alternating, in one server start "
                        "(the summary takes medians: one run varies by several percent)")
    parser.add_argument("--port", type=int, default=8013)
    parser.add_argument("--vllm-args", default="",
                        help="extra vLLM options for `qtune serve -- …` (a lever to measure), "
                        "e.g. \"--max-num-seqs 16\"")
    args = parser.parse_args()

    from qtune.hardware import speed_flags_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result_dir = args.out.with_suffix("")
    result_dir.mkdir(exist_ok=True)
    dataset = result_dir / "dataset.jsonl"
    count = build_dataset(dataset, args.per_task, args.max_output)
    os.environ["OPENAI_API_KEY"] = "bench"  # vLLM's client sends it; the PEFT server ignores it
    lines = [f"Load: {count} test questions (GSM8K + CounselChat), {args.num_prompts} requests "
             f"per rate, Poisson arrivals, at most {args.max_concurrency or 'any number of'} in "
             f"flight, models round robin; SLO {' '.join(args.goodput)}; "
             f"CPU flags: {speed_flags_text()}; {time.strftime('%Y-%m-%d')}", "",
             "| engine | models | rate (req/s) | completed | output tok/s | goodput (req/s) | "
             "TTFT p50 / p99 ms | TPOT p50 / p99 ms | ITL p50 / p99 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    results: dict[tuple[str, float], dict[str, list[dict]]] = {}
    for engine in args.engines:
        started = time.monotonic()
        log = result_dir / f"{engine}.log"
        process = start_engine(engine, args.port, log, shlex.split(args.vllm_args))
        try:
            base_url = f"http://127.0.0.1:{args.port}"
            served = wait_ready(base_url, process, log)
            lines.insert(1, f"{engine} {args.vllm_args}: ready {time.monotonic() - started:.0f} s "
                            "after start")
            for _ in range(args.repeat):
                for mix in args.mixes:
                    for rate in args.rates:
                        result = run_rate(args, base_url, pick_models(served, mix), rate,
                                          dataset, result_dir, engine)
                        results.setdefault((engine, rate), {}).setdefault(mix, []).append(result)
                        lines.append(row(engine, mix, rate, result))
                        print(lines[-1], flush=True)
        finally:
            os.killpg(process.pid, 15)
            process.wait(timeout=60)
    lines += adapter_cost_summary(results)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
