"""What the machine can do natively, so defaults follow the hardware rather than guesses."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

#: CPU flags that give hardware bf16 matmuls (AVX512-BF16 on Zen 4 / Cooper Lake, AMX on
#: Sapphire Rapids). Without them torch and vLLM emulate bf16 and run several times
#: slower than in fp32 (measured here: a LoRA training step 40x, vLLM decoding 2x).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def speed_flags_text() -> str:
    """The CPU flags that decide CPU speed here (vector width, bf16, AMX), for reports."""
    wanted = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")))
    return " ".join(wanted) or "none of avx/amx"


def cpu_class() -> str:
    """The CPU's speed class in words: its widest vectors, and bf16/AMX where present
    (runs from CPUs of different classes differ in speed, and in precision under auto)."""
    flags = cpu_flags()
    width = ("AVX-512" if "avx512f" in flags else "AVX2 only" if "avx2" in flags
             else "no AVX2")
    extras = [name for flag, name in (("avx512_bf16", "native bf16"), ("amx_tile", "AMX"))
              if flag in flags]
    return ", ".join([width, *extras])


def cpu_has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


@lru_cache(maxsize=1)
def has_nvidia_gpu() -> bool:
    """An NVIDIA GPU is visible (nvidia-smi lists one); no torch import needed."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def native_bf16() -> bool:
    """True where bf16 runs in hardware: a bf16-capable CUDA GPU, or a CPU with
    AVX512-BF16 or AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def serving_dtype() -> str:
    """vLLM --dtype: the model's own (bf16) on GPUs and bf16-capable CPUs, else float32."""
    return "auto" if has_nvidia_gpu() or cpu_has_native_bf16() else "float32"
