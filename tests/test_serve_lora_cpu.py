"""qtune's CPU LoRA path for vLLM (serve/lora_cpu.py) against vLLM's own CPU wrapper.

Valid rows must come out exactly as vLLM computes them; rows without an adapter (slot
index -1) must get no LoRA at all, which vLLM's torch ops get wrong (they read -1 as the
last slot). The served end-to-end check is in test_serve_server.py.
"""

from __future__ import annotations

import pytest
import torch
from qtune.serve import lora_cpu
from qtune.serve.lora_cpu import PunicaWrapperQtune

SLOTS, RANK, WIDTH = 4, 8, 64
SLICES = (64, 16, 16)  # q, k, v of a small model


def _weights(seed: int = 0, dtype: torch.dtype = torch.bfloat16,
             ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    lora_a = tuple(torch.randn(SLOTS, 1, RANK, WIDTH, generator=gen).to(dtype) for _ in SLICES)
    lora_b = tuple(torch.randn(SLOTS, 1, out, RANK, generator=gen).to(dtype) for out in SLICES)
    return lora_a, lora_b


def _wrapper(cls: type, indices: list[int]):
    wrapper = cls(1024, 64, "cpu")
    index = torch.tensor(indices)
    wrapper._token_lora_indices[: len(index)] = index
    wrapper._sampler_indices[: len(index)] = index  # one row per request, as when sampling
    wrapper.indices_len[:] = [len(index)] * 4
    wrapper._update_prefill_metadata(wrapper.token_lora_indices)
    wrapper.is_prefill = True  # vLLM's V1 runner always takes the prefill path
    return wrapper


def _apply(wrapper, x: torch.Tensor, lora_a, lora_b, add_inputs: bool = True) -> torch.Tensor:
    y = torch.ones(x.shape[0], sum(SLICES), dtype=x.dtype)
    kwargs = {} if add_inputs else {"add_inputs": False}
    wrapper.add_lora_linear(y, x, lora_a, lora_b, 1.0, SLICES, **kwargs)
    return y


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rows_with_an_adapter_match_vllm_and_rows_without_get_none(dtype: torch.dtype) -> None:
    """bf16 (AVX-512 machines serve in it): bit for bit; float32 (AVX2): to rounding."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    indices = [-1, 0, 1, 2, 3, -1, 3, 3, 1, -1]
    x = torch.randn(len(indices), WIDTH).to(dtype)
    lora_a, lora_b = _weights(dtype=dtype)
    ours = _apply(_wrapper(PunicaWrapperQtune, indices), x, lora_a, lora_b)
    theirs = _apply(_wrapper(PunicaWrapperCPU, indices), x, lora_a, lora_b)
    with_adapter = torch.tensor(indices) >= 0
    if dtype == torch.bfloat16:
        assert torch.equal(ours[with_adapter], theirs[with_adapter])
    else:
        assert torch.allclose(ours[with_adapter], theirs[with_adapter], rtol=1e-5, atol=1e-3)
    assert torch.equal(ours[~with_adapter], torch.ones_like(ours[~with_adapter]))
    assert not torch.equal(ours[~with_adapter], theirs[~with_adapter])  # vLLM's -1 bug


def test_zero_blocks_are_skipped_without_changing_the_result() -> None:
    """An adapter of q and v leaves the k slice zero; an empty slot is zero everywhere."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    indices = [0, 1, 2, 3, 3, 1]
    x = torch.randn(len(indices), WIDTH).bfloat16()
    lora_a, lora_b = _weights(4)
    lora_a[1].zero_()  # no adapter adapts k
    for a in lora_a:
        a[3].zero_()  # slot 3 holds no adapter
    ours = _apply(_wrapper(PunicaWrapperQtune, indices), x, lora_a, lora_b)
    assert torch.equal(ours, _apply(_wrapper(PunicaWrapperCPU, indices), x, lora_a, lora_b))
    assert torch.equal(ours[3:5], torch.ones_like(ours[3:5]))
    for a in lora_a:
        a.zero_()
    assert torch.equal(_apply(_wrapper(PunicaWrapperQtune, indices), x, lora_a, lora_b),
                       torch.ones(len(indices), sum(SLICES), dtype=torch.bfloat16))


def test_the_split_shrink_and_expand_agree_with_the_fused_path() -> None:
    indices = [2, -1, 0, 1]
    x = torch.randn(len(indices), WIDTH).bfloat16()
    lora_a, lora_b = _weights(1)
    wrapper = _wrapper(PunicaWrapperQtune, indices)
    fused = _apply(wrapper, x, lora_a, lora_b)
    buffers = tuple(torch.zeros(len(indices), RANK) for _ in SLICES)
    wrapper.add_shrink(buffers, x, lora_a, 1.0)
    split = torch.ones(len(indices), sum(SLICES), dtype=torch.bfloat16)
    wrapper.add_expand(split, buffers, lora_b, SLICES)
    assert torch.allclose(fused.float(), split.float(), rtol=2e-2, atol=2e-2)
    assert torch.equal(split[1], torch.ones_like(split[1]))


def test_lm_head_lora_matches_vllm_and_never_crashes_the_engine() -> None:
    """With every layer enabled (--allow-runtime-lora) the LM head has LoRA too. vLLM's CPU
    version raises (and the engine dies) when a request asks for prompt log-probabilities:
    more logit rows than requests."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    vocab, indices = 96, [1, -1, 0]
    gen = torch.Generator().manual_seed(5)
    lora_a = torch.randn(SLOTS, 1, RANK, WIDTH, generator=gen).bfloat16()
    lora_b = torch.randn(SLOTS, 1, vocab, RANK, generator=gen).bfloat16()
    x = torch.randn(len(indices), WIDTH).bfloat16()

    def logits(cls, rows: torch.Tensor, a=lora_a, b=lora_b) -> torch.Tensor:
        y = torch.ones(rows.shape[0], vocab, dtype=torch.bfloat16)
        _wrapper(cls, indices).add_lora_logits(y, rows, a, b, 1.0)
        return y

    ours, theirs = logits(PunicaWrapperQtune, x), logits(PunicaWrapperCPU, x)
    assert torch.equal(ours[[0, 2]], theirs[[0, 2]])
    assert torch.equal(ours[1], torch.ones_like(ours[1]))
    prompt_rows = torch.randn(7, WIDTH).bfloat16()
    with pytest.raises(RuntimeError):
        logits(PunicaWrapperCPU, prompt_rows)
    assert torch.equal(logits(PunicaWrapperQtune, prompt_rows), torch.ones(7, vocab).bfloat16())
    no_head_adapter = logits(PunicaWrapperQtune, x, lora_a, torch.zeros_like(lora_b))
    assert torch.equal(no_head_adapter, torch.ones_like(no_head_adapter))


def test_weights_loaded_into_a_slot_are_picked_up() -> None:
    """vLLM copies a newly loaded adapter into the stacked tensors in place."""
    indices = [0, 1]
    x = torch.randn(2, WIDTH).bfloat16()
    lora_a, lora_b = _weights(2)
    wrapper = _wrapper(PunicaWrapperQtune, indices)
    before = _apply(wrapper, x, lora_a, lora_b)
    with torch.inference_mode():
        lora_b[0][1].mul_(-1.0)
    after = _apply(wrapper, x, lora_a, lora_b)
    assert torch.equal(after[0], before[0])
    assert not torch.equal(after[1], before[1])
    assert torch.equal(after, _apply(_wrapper(PunicaWrapperQtune, indices), x, lora_a, lora_b))


def test_assigning_instead_of_adding() -> None:
    indices = [1, -1]
    x = torch.randn(2, WIDTH).bfloat16()
    lora_a, lora_b = _weights(3)
    added = _apply(_wrapper(PunicaWrapperQtune, indices), x, lora_a, lora_b)
    assigned = _apply(_wrapper(PunicaWrapperQtune, indices), x, lora_a, lora_b, add_inputs=False)
    assert torch.equal(assigned[1], torch.zeros_like(assigned[1]))
    assert torch.allclose((assigned[0].float() + 1).bfloat16().float(), added[0].float())


def test_the_switch_selects_the_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.platforms import current_platform

    platform = type(current_platform)
    vllm_own = "vllm.lora.punica_wrapper.punica_cpu.PunicaWrapperCPU"  # also if already loaded
    monkeypatch.setattr(platform, "get_punica_wrapper", classmethod(lambda cls: vllm_own))
    monkeypatch.setenv(lora_cpu.SWITCH, "vllm")
    lora_cpu.register()
    assert current_platform.get_punica_wrapper().endswith("PunicaWrapperCPU")
    monkeypatch.setenv(lora_cpu.SWITCH, "qtune")
    lora_cpu.register()
    assert current_platform.get_punica_wrapper() == "qtune.serve.lora_cpu.PunicaWrapperQtune"
    monkeypatch.setenv(lora_cpu.SWITCH, "fast please")
    with pytest.raises(ValueError, match="QTUNE_CPU_LORA"):
        lora_cpu.register()


def test_vllm_finds_the_plugin() -> None:
    from importlib.metadata import entry_points

    plugins = {p.name: p.value for p in entry_points(group="vllm.general_plugins")}
    assert plugins.get("qtune_cpu_lora") == "qtune.serve.lora_cpu:register"
