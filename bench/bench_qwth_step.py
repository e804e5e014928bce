"""Quick timing of the QWTH adapter against a same-rank PEFT LoRA on the embedded model.

Measures (medians): the circuit forward+backward, building all A/B (forward+backward),
and one AdamW training step of QWTH vs LoRA on a random batch.

    python bench/bench_qwth_step.py --batch 2 --seq 128 --steps 5 [--threads 2] [--autocast]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_base(dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    from qtune.model import prepare_embedded

    return AutoModelForCausalLM.from_pretrained(prepare_embedded(), dtype=dtype)


def step_fn(model, ids, autocast: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=1e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="sequences per step")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--autocast", action="store_true", help="bf16 autocast, as training")
    parser.add_argument(
        "--qubits", type=int, nargs="+", default=[10, 12], help="circuit sizes to time"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from peft import LoraConfig, get_peft_model
    from qtune.finetune.qwth import QWTHConfig, get_qwth_model
    from qtune.finetune.qwth.circuit import QuantumWeights

    for n in args.qubits:
        weights = QuantumWeights(n, 4, device="lightning.qubit")
        upstream = torch.randn(2**n)

        def circuit_step(weights=weights, upstream=upstream):
            weights.zero_grad()
            (weights() * upstream).sum().backward()

        print(
            f"circuit {n} qubits, lightning adjoint fwd+bwd: "
            f"{timed(circuit_step, args.steps * 4) * 1e3:.1f} ms"
        )

    ids = torch.randint(
        0, 49152, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)
    )
    qwth = get_qwth_model(load_base(), QWTHConfig())
    print(
        f"QWTH trainable {qwth.num_trainable_parameters():,} vs LoRA "
        f"{qwth.lora_parameter_count():,}"
    )

    def build_all(model=qwth):
        model.zero_grad()
        matrices = model._build_matrices()
        sum(m.sum() for pair in matrices.values() for m in pair.values()).backward()

    print(f"build all A/B incl. circuit, fwd+bwd: {timed(build_all, args.steps * 4) * 1e3:.1f} ms")
    qwth_step = timed(step_fn(qwth, ids, args.autocast), args.steps)
    del qwth, build_all
    lora = get_peft_model(
        load_base(),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    lora_step = timed(step_fn(lora, ids, args.autocast), args.steps)
    print(
        f"train step {args.batch}x{args.seq} (autocast={args.autocast}, threads={args.threads}): "
        f"QWTH {qwth_step:.3f} s, LoRA {lora_step:.3f} s, overhead "
        f"{(qwth_step - lora_step) * 1e3:.0f} ms ({qwth_step / lora_step - 1:+.1%})"
    )


if __name__ == "__main__":
    main()
