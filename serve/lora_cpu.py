"""qtune's LoRA path for vLLM on CPU: exact for base-model rows, and one GEMM per slice.

vLLM's CPU LoRA ops (``vllm/lora/ops/torch_ops``) have two problems for a server that
mixes the base model and several adapters in one batch:

* **Wrong output for base-model rows.** A token without an adapter has the slot index
  ``-1`` ("no LoRA"); the torch ops gather ``weights[indices]`` and Python's negative
  indexing turns ``-1`` into the *last* adapter slot, so a base-model request batched
  next to adapter requests gets the last slot's adapter added to every adapted layer
  (qtune serves ``--max-loras`` = the number of adapters, so that slot is always
  filled). Upstream knows (vllm-project/vllm pull requests 48421 and 49656, open).
* **Slow.** Each call copies one (out × rank) weight matrix per token, converts it to
  fp32 and runs a batched matrix-vector product: on 2 cores that per-step cost made
  adapters run at ~0.74x the base model's throughput (docs/benchmarks.md).

Here every slot's factors are applied to every token in one GEMM
(``x @ A_all^T``: tokens × (slots · rank), a few dozen columns), and a 0/1 slot mask
keeps each token's own slot; tokens with ``-1`` get an all-zero mask, i.e. no LoRA.
Both products run in the model's dtype through vLLM's own oneDNN matmul with the factors
packed once per adapter load. vLLM's torch ops accumulate the shrink in fp32 and round it
to the model's dtype before the expand, as oneDNN does inside one matmul, so rows with an
adapter come out bit for bit as vLLM computes them (tests/test_serve_lora_cpu.py).

It is installed as a vLLM general plugin (``pyproject.toml``: ``vllm.general_plugins``),
which vLLM loads in every process, and is active on the CPU platform only. Set
``QTUNE_CPU_LORA=vllm`` to run vLLM's own ops instead (to compare them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

log = logging.getLogger(__name__)

#: Environment switch read by ``register``: "qtune" (default) or "vllm".
SWITCH = "QTUNE_CPU_LORA"
CHOICES = ("qtune", "vllm")


def chosen_path() -> str:
    choice = os.environ.get(SWITCH, "qtune").strip().lower() or "qtune"
    if choice not in CHOICES:
        raise ValueError(f"{SWITCH}={choice!r}: use one of {', '.join(CHOICES)}")
    return choice


def register() -> None:
    """vLLM plugin entry point: on CPU, make vLLM build ``PunicaWrapperQtune``."""
    if chosen_path() == "vllm":
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    qualname = f"{__name__}.PunicaWrapperQtune"
    type(current_platform).get_punica_wrapper = classmethod(lambda cls: qualname)


def slot_mask(indices: torch.Tensor, num_slots: int) -> torch.Tensor:
    """(tokens, slots) float32 with a 1 at each token's slot; all zero for ``-1`` (no LoRA)."""
    mask = torch.zeros(indices.shape[0], num_slots, dtype=torch.float32)
    rows = torch.nonzero(indices >= 0).squeeze(1)
    mask[rows, indices[rows]] = 1.0
    return mask


def shrink(x: torch.Tensor, lora_a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (tokens, in) times each token's A (slot, 1, rank, in) -> (tokens, rank), fp32."""
    slots, _, rank, width = lora_a.shape
    every_slot = x.float() @ lora_a.reshape(slots * rank, width).float().T
    return torch.einsum("tsr,ts->tr", every_slot.view(-1, slots, rank), mask)


def expand(h: torch.Tensor, lora_b: torch.Tensor, mask: torch.Tensor,
           dtype: torch.dtype) -> torch.Tensor:
    """h (tokens, rank) times each token's B (slot, 1, out, rank) -> (tokens, out) in dtype.

    The rank vector is placed in its slot's block of a (tokens, slots · rank) row, so one
    GEMM against every slot's B stacked along the rank axis applies the right one."""
    slots, _, out, rank = lora_b.shape
    blocks = (h.float().unsqueeze(1) * mask.unsqueeze(2)).reshape(-1, slots * rank)
    stacked_b = lora_b.reshape(slots, out, rank).transpose(1, 2).reshape(slots * rank, out)
    return blocks.to(dtype) @ stacked_b.to(dtype)


@dataclass
class _PackedLayer:
    """One adapted layer's factors laid out for ``add_lora_linear``. Only the (slice, slot)
    blocks whose A and B are both non-zero are kept (the k slice of an adapter that adapts
    q and v, empty slots): A for those blocks side by side (in × blocks · rank) and B
    block-diagonal ((blocks · rank) × out), in the model's dtype, each behind a matmul that
    oneDNN has prepared for it (vLLM's own CPU GEMM) where vLLM's build has one."""

    versions: tuple[int, ...]
    slots: torch.Tensor  # the slot of each kept block, to pick a token's mask entries
    rank: int
    shrink: Callable[[torch.Tensor], torch.Tensor] | None  # None: every block is zero
    expand: Callable[[torch.Tensor], torch.Tensor] | None


def _matmul(weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x @ weight (in × out), through oneDNN with the weight packed once if possible."""
    from vllm import _custom_ops as ops

    if ops._supports_onednn:
        try:
            handler = ops.create_onednn_mm(weight, 32)
            return lambda x: ops.onednn_mm(handler, x, None)
        except RuntimeError as error:  # an unsupported dtype or shape: plain torch
            log.warning("oneDNN matmul unavailable for LoRA (%s): using torch", error)
    return lambda x: x @ weight


def pack_layer(lora_a_stacked: tuple[torch.Tensor, ...], lora_b_stacked: tuple[torch.Tensor, ...],
               dtype: torch.dtype) -> _PackedLayer:
    num_slots, _, rank, _ = lora_a_stacked[0].shape
    outs = [b.shape[2] for b in lora_b_stacked]
    starts = [sum(outs[:i]) for i in range(len(outs))]
    kept = [(piece, slot) for piece in range(len(outs)) for slot in range(num_slots)
            if lora_a_stacked[piece][slot].any() and lora_b_stacked[piece][slot].any()]
    versions = _versions(lora_a_stacked, lora_b_stacked)
    if not kept:
        return _PackedLayer(versions, torch.empty(0, dtype=torch.long), rank, None, None)
    a_all = torch.cat([lora_a_stacked[p][s, 0] for p, s in kept]).to(dtype).T
    b_blocks = torch.zeros(len(kept) * rank, sum(outs), dtype=dtype)
    for block, (piece, slot) in enumerate(kept):
        b_blocks[block * rank: (block + 1) * rank, starts[piece]: starts[piece] + outs[piece]] = (
            lora_b_stacked[piece][slot, 0].T)
    slots = torch.tensor([slot for _, slot in kept])
    return _PackedLayer(versions, slots, rank, _matmul(a_all), _matmul(b_blocks))


def _versions(*stacks: tuple[torch.Tensor, ...]) -> tuple[int, ...]:
    # vLLM loads an adapter into a slot by copying into these tensors in place, which
    # bumps their version counters: a changed tuple means the packed copy is stale.
    return tuple(t._version for stack in stacks for t in stack)


def _delta(packed: _PackedLayer, x: torch.Tensor, mask: torch.Tensor, scale: float,
           dtype: torch.dtype) -> torch.Tensor:
    """Each token's LoRA output: its rank vector stays in the blocks of its own slot (zeros
    elsewhere), so that row times the block-diagonal B applies exactly its adapter."""
    blocks = packed.shrink(x.to(dtype)).view(x.shape[0], len(packed.slots), packed.rank)
    blocks.mul_(mask[:, packed.slots].to(dtype).unsqueeze(2))
    if scale != 1.0:
        blocks.mul_(scale)
    return packed.expand(blocks.view(x.shape[0], -1))


class PunicaWrapperQtune(PunicaWrapperCPU):
    """vLLM's CPU wrapper with qtune's LoRA products. ``add_lora_linear`` (every adapted
    projection) is two GEMMs per layer over factors packed once per adapter load;
    ``add_shrink``/``add_expand`` (vLLM's sharded layers) use the same masking."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._masks: dict[int, torch.Tensor] = {}  # per step: slot count -> token mask
        self._packed_layers: dict[int, _PackedLayer] = {}  # per layer, until weights change

    def update_metadata(self, *args: Any, **kwargs: Any) -> None:
        super().update_metadata(*args, **kwargs)
        self._masks = {}

    def _mask(self, num_slots: int, num_tokens: int) -> torch.Tensor:
        if num_slots not in self._masks:
            self._masks[num_slots] = slot_mask(self.token_lora_indices, num_slots)
        mask = self._masks[num_slots]
        if mask.shape[0] != num_tokens:
            raise RuntimeError(f"LoRA mapping has {mask.shape[0]} tokens, the layer "
                               f"{num_tokens}: set {SWITCH}=vllm and report this")
        return mask

    def _skip(self) -> bool:
        return self.is_prefill and self.no_lora

    def _packed(self, lora_a_stacked: tuple[torch.Tensor, ...],
                lora_b_stacked: tuple[torch.Tensor, ...], dtype: torch.dtype) -> _PackedLayer:
        key = lora_a_stacked[0].data_ptr()
        packed = self._packed_layers.get(key)
        if packed is None or packed.versions != _versions(lora_a_stacked, lora_b_stacked):
            packed = self._packed_layers[key] = pack_layer(lora_a_stacked, lora_b_stacked, dtype)
        return packed

    def add_lora_linear(self, y: torch.Tensor, x: torch.Tensor,
                        lora_a_stacked: tuple[torch.Tensor, ...],
                        lora_b_stacked: tuple[torch.Tensor, ...], scale: float,
                        output_slices: tuple[int, ...], *, add_inputs: bool = True,
                        **kwargs: Any) -> None:
        packed = None if self._skip() else self._packed(lora_a_stacked, lora_b_stacked, y.dtype)
        if packed is None or packed.shrink is None:  # no LoRA token, or no weights here
            if not add_inputs:
                y.zero_()
            return
        x = x.view(-1, x.shape[-1])
        delta = _delta(packed, x, self._mask(lora_a_stacked[0].shape[0], x.shape[0]),
                       scale, y.dtype)
        y_2d = y.view(-1, y.shape[-1])[:, : delta.shape[1]]
        if add_inputs:
            y_2d.add_(delta)
        else:
            y_2d.copy_(delta)

    def add_lora_logits(self, y: torch.Tensor, x: torch.Tensor, lora_a_stacked: torch.Tensor,
                        lora_b_stacked: torch.Tensor, scale: float, **kwargs: Any) -> None:
        """LoRA on the LM head (only with every layer enabled, --allow-runtime-lora). vLLM's
        CPU version crashes the engine when a request asks for prompt log-probabilities
        (one row per prompt token against one adapter index per request); here an LM head
        no adapter adapts costs nothing, and rows that cannot be matched to requests get no
        LoRA, with a warning, instead of killing the server."""
        packed = self._packed((lora_a_stacked,), (lora_b_stacked,), y.dtype)
        if packed.shrink is None:
            return
        x = x.view(-1, x.shape[-1])
        indices = self.sampler_indices
        if indices.shape[0] != x.shape[0]:
            log.warning("LM-head LoRA skipped for %d logit rows of %d requests (prompt "
                        "log-probabilities)", x.shape[0], indices.shape[0])
            return
        delta = _delta(packed, x, slot_mask(indices, lora_a_stacked.shape[0]), scale, y.dtype)
        width = min(delta.shape[1], y.shape[-1])
        y.view(-1, y.shape[-1])[:, :width].add_(delta[:, :width])

    def add_shrink(self, y: Any, x: torch.Tensor, lora_a_stacked: tuple[torch.Tensor, ...],
                   scale: float, **kwargs: Any) -> None:
        if self._skip():
            return
        x = x.view(-1, x.shape[-1])
        mask = self._mask(lora_a_stacked[0].shape[0], x.shape[0])
        for out, lora_a in zip(y, lora_a_stacked, strict=True):
            out.view(-1, out.shape[-1])[:, : lora_a.shape[2]] = scale * shrink(x, lora_a, mask)

    def add_expand(self, y: torch.Tensor, x: Any, lora_b_stacked: tuple[torch.Tensor, ...],
                   output_slices: tuple[int, ...], offset_start: int = 0,
                   add_inputs: bool = True, **kwargs: Any) -> None:
        if self._skip():
            return
        y_2d = y.view(-1, y.shape[-1])
        mask = self._mask(lora_b_stacked[0].shape[0], y_2d.shape[0])
        offset = offset_start
        for h, lora_b, size in zip(x, lora_b_stacked, output_slices, strict=True):
            delta = expand(h.view(-1, h.shape[-1]), lora_b, mask, y.dtype)
            if add_inputs:
                y_2d[:, offset: offset + size] += delta
            else:
                y_2d[:, offset: offset + size] = delta
            offset += size
