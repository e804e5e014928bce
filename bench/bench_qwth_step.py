"""Training step (or inference forward) of QWTH, its designs and QTHA against a same-rank
PEFT LoRA on the embedded model.

Each measurement runs in a fresh process (so each method's peak memory is its own), and the
methods alternate (qwth, lora, qwth, lora, ...) so that drift in a shared machine's speed
hits all alike. Each process loads the base model, wraps it exactly as training does (the
study's method settings, ``qtune.study.config.STUDY_METHODS``), takes one warm-up AdamW
step and then ``--steps`` timed steps on one fixed random batch, in the precision training
uses (``auto``: bf16 only where the hardware runs it natively). Reports the median step
time, tokens/s, the peak RSS, and each method's overhead per step relative to LoRA.
``--inference`` times a no-grad forward instead (the per-token cost of serving in process).

    python bench/bench_qwth_step.py                      # qwth vs lora, 4 x 256 tokens
    python bench/bench_qwth_step.py --methods qwth qwth-expval qwth-layer qtha lora --markdown
    python bench/bench_qwth_step.py --methods qtha lora --inference --batch 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_METHODS = ("qwth", "lora")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence (default 256)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=2,
                        help="processes per method, alternating (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "no"),
                        help="as `qtune finetune --mixed-precision` (default auto)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help="study method names (qtune.study.config.STUDY_METHODS); lora is "
                        "the reference and is added when missing")
    parser.add_argument("--inference", action="store_true",
                        help="time a no-grad forward pass instead of a training step")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from qtune.study.config import STUDY_METHODS

    unknown = sorted(set(args.methods) - set(STUDY_METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}: choose from {', '.join(STUDY_METHODS)}")
    if "lora" not in args.methods:
        args.methods.append("lora")
    return args


def build_model(method: str, precision: str):
    """The embedded base model with the method's rank-8 adapter on q_proj, v_proj, built as
    training builds it."""
    import torch
    from qtune.finetune.config import TrainConfig
    from qtune.finetune.train import wrap_with_adapter
    from qtune.study.config import STUDY_METHODS
    from transformers import AutoModelForCausalLM

    from qtune.model import prepare_embedded

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(prepare_embedded(), dtype=dtype)
    base.config.use_cache = False
    return wrap_with_adapter(base, TrainConfig.from_dict(STUDY_METHODS[method]).validate())


def worker(args: argparse.Namespace) -> dict:
    """One process: warm-up step, then timed steps; the result as a dict."""
    import torch
    from qtune.finetune.train import resolve_mixed_precision

    torch.set_num_threads(args.threads)
    precision = resolve_mixed_precision(args.precision)
    model = build_model(args.worker, precision)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, 49152, (args.batch, args.seq),
                        generator=torch.Generator().manual_seed(0))

    def step() -> float:
        start = time.perf_counter()
        if args.inference:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                 enabled=precision == "bf16"):
                model(input_ids=ids)
            return time.perf_counter() - start
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        return time.perf_counter() - start

    step()  # warm-up: first-call allocations, circuit compilation
    times = [step() for _ in range(args.steps)]
    return {"method": args.worker, "times": times, "trainable": sum(p.numel() for p in params),
            "precision": precision,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_worker(method: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--batch", str(args.batch),
               "--seq", str(args.seq), "--steps", str(args.steps), "--threads", str(args.threads),
               "--precision", args.precision, "--methods", *args.methods]
    if args.inference:
        command.append("--inference")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{method} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(results: list[dict], args: argparse.Namespace) -> dict[str, dict]:
    tokens = args.batch * args.seq
    summary = {}
    for method in args.methods:
        mine = [r for r in results if r["method"] == method]
        times = [t for r in mine for t in r["times"]]
        median = statistics.median(times)
        summary[method] = {"median_s": median, "min_s": min(times), "tokens_per_s": tokens / median,
                           "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
                           "trainable": mine[0]["trainable"], "precision": mine[0]["precision"],
                           "n": len(times)}
    return summary


def report(summary: dict[str, dict], args: argparse.Namespace) -> str:
    lora = summary["lora"]
    what = "no-grad forward" if args.inference else "training step"
    lines = [f"{what}, batch {args.batch} x {args.seq} tokens, {args.threads} threads, "
             f"precision {lora['precision']}, {args.rounds} alternating processes per method x "
             f"{args.steps} timed steps"]
    for s in summary.values():
        s["overhead_ms"] = (s["median_s"] - lora["median_s"]) * 1e3
        s["overhead"] = s["median_s"] / lora["median_s"] - 1
    if args.markdown:
        lines += ["", "| method | trainable | median (s) | min (s) | tokens/s | vs LoRA | "
                      "peak RSS (MiB) | timings |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {m} | {s['trainable']:,} | {s['median_s']:.3f} | {s['min_s']:.3f} | "
                  f"{s['tokens_per_s']:.0f} | {s['overhead_ms']:+.0f} ms ({s['overhead']:+.1%}) | "
                  f"{s['peak_rss_mib']:.0f} | {s['n']} |" for m, s in summary.items()]
        lines.append("")
    else:
        lines += [f"{m}: {s['trainable']:,} trainable, {s['median_s']:.3f} s median "
                  f"({s['min_s']:.3f} min), {s['tokens_per_s']:.0f} tokens/s, "
                  f"{s['overhead_ms']:+.0f} ms ({s['overhead']:+.1%}) vs LoRA, peak RSS "
                  f"{s['peak_rss_mib']:.0f} MiB" for m, s in summary.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    results = []
    for round_index in range(args.rounds):
        for method in args.methods:
            print(f"round {round_index + 1}/{args.rounds}: {method}", file=sys.stderr, flush=True)
            results.append(run_worker(method, args))
    print(report(summarise(results, args), args))


if __name__ == "__main__":
    main()
