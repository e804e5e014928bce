"""Time one training step of QWTH's quantum circuit on the PennyLane simulators.

One step = the forward pass (all 2^n basis-state probabilities, centred) and the
backward pass for a fixed upstream gradient, through qtune's own
``qtune.finetune.qwth.circuit.QuantumWeights`` -- the function the adapter calls once
per optimizer step. Compared:

* ``lightning.qubit`` with the adjoint method (qtune's default: a custom VJP, one
  adjoint pass on ``expval(SparseHamiltonian(diag(g)))``);
* ``default.qubit`` with backprop through the torch interface;
* ``lightning.qubit`` with parameter-shift (2 circuit runs per angle: slow).

Each configuration runs in a fresh process so that its peak memory (max RSS) is its
own; the figure reported is the peak minus the process's RSS after imports.

    python bench/bench_circuits.py                   # 8, 10, 12, 14 qubits
    python bench/bench_circuits.py --qubits 8 10 --markdown
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

METHODS = (
    ("lightning.qubit", "adjoint"),
    ("default.qubit", "backprop"),
    ("lightning.qubit", "parameter-shift"),
)


@dataclass
class Timing:
    device: str
    diff_method: str
    n_qubits: int
    circuit_layers: int
    parameters: int
    repeats: int
    forward_ms: float
    step_ms: float  # forward + backward, median
    step_ms_min: float
    peak_mib: float


def _rss_mib() -> float:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _measure(device: str, diff_method: str, n_qubits: int, layers: int, repeats: int) -> dict:
    import torch
    from qtune.finetune.qwth.circuit import QuantumWeights

    torch.set_num_threads(1)
    import pennylane  # noqa: F401  (imported before the baseline: its import is not the circuit's cost)

    baseline = _rss_mib()
    weights = QuantumWeights(n_qubits, layers, device=device, diff_method=diff_method)
    upstream = torch.randn(2**n_qubits, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        weights.zero_grad(set_to_none=True)
        (weights() * upstream).sum().backward()

    step()  # warm-up: builds and caches the QNodes
    forward, steps = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            weights()
        forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        step()
        steps.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return asdict(
        Timing(
            device,
            diff_method,
            n_qubits,
            layers,
            weights.theta.numel(),
            repeats,
            1000 * statistics.median(forward),
            1000 * statistics.median(steps),
            1000 * min(steps),
            max(0.0, peak - baseline),
        )
    )


def _worker(queue: multiprocessing.Queue, *args: object) -> None:
    try:
        queue.put(_measure(*args))
    except Exception as error:  # reported in the table instead of stopping the run
        queue.put({"error": f"{type(error).__name__}: {error}"})


def measure_isolated(
    device: str, diff_method: str, n_qubits: int, layers: int, repeats: int
) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_worker, args=(queue, device, diff_method, n_qubits, layers, repeats)
    )
    process.start()
    result = queue.get()
    process.join()
    return result


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "| qubits | method | angles | repeats | forward (ms) | forward + backward (ms, median) | min (ms) | peak memory (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        method = f"{row['device']} {row['diff_method']}"
        if "error" in row:
            lines.append(f"| {row['n_qubits']} | {method} | | | | failed: {row['error']} | | |")
            continue
        lines.append(
            f"| {row['n_qubits']} | {method} | {row['parameters']} | {row['repeats']} "
            f"| {row['forward_ms']:.1f} | {row['step_ms']:.1f} | {row['step_ms_min']:.1f} "
            f"| {row['peak_mib']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Command: `{command}`; machine: {platform.machine()}, {_cpu_name()}, "
        f"Python {platform.python_version()}, one torch thread."
    )
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qubits", type=int, nargs="+", default=[8, 10, 12, 14])
    parser.add_argument("--layers", type=int, default=4, help="StronglyEntanglingLayers")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps (adjoint, backprop)")
    parser.add_argument("--shift-repeats", type=int, default=2, help="timed parameter-shift steps")
    parser.add_argument(
        "--shift-max-qubits", type=int, default=12, help="skip parameter-shift above this"
    )
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)

    rows = []
    for n_qubits in args.qubits:
        for device, method in METHODS:
            shift = method == "parameter-shift"
            if shift and n_qubits > args.shift_max_qubits:
                continue
            repeats = args.shift_repeats if shift else args.repeats
            row = measure_isolated(device, method, n_qubits, args.layers, repeats)
            row.setdefault("device", device)
            row.setdefault("diff_method", method)
            row.setdefault("n_qubits", n_qubits)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    if args.markdown:
        command = "python bench/bench_circuits.py " + " ".join(argv or sys.argv[1:])
        print(markdown(rows, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
