"""Circuit-shaped tensor-train cores (``core_circuit``): the middle core of every A and B
is a block of the unitary of its own small real circuit, scaled by a trainable scalar,
instead of a free tensor.

The circuit on q qubits, per layer: RY(angle_i) on every wire, then CZ on every ring
neighbour pair (i, i+1 mod q). RY and CZ are real, so the unitary U is a real orthogonal
2^q x 2^q matrix. A core of shape (R, m, n, R') takes the block U[:R m, :n R'] (rows
(r, i), columns (j, r')), with q the fewest qubits whose 2^q covers both sides. All the
model's circuit cores of one shape are built as one batch here, in torch: U is a
product of Kronecker-structured layers, checked against ``qml.matrix`` in the tests.

Unlike a bond weighting, which a neighbouring free core can absorb, this changes what the
adapter can represent: a third of the cores become circuit-generated, with q L angles in
place of R m n R' free entries.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def circuit_core_index(n_cores: int) -> int | None:
    """Which core a circuit generates: the middle one, when there are three or more."""
    return n_cores // 2 if n_cores >= 3 else None


def circuit_qubits(shape: tuple[int, int, int, int]) -> int:
    """Fewest qubits whose unitary covers the core's (R m) x (n R') block."""
    rank_in, rows, cols, rank_out = shape
    return max(1, math.ceil(math.log2(max(rank_in * rows, cols * rank_out))))


@lru_cache(maxsize=16)
def _cz_ring_signs(n_qubits: int) -> torch.Tensor:
    """diag of the CZ ring: (-1)^(number of neighbouring pairs that are both 1)."""
    index = torch.arange(2**n_qubits)
    bits = [(index >> (n_qubits - 1 - w)) & 1 for w in range(n_qubits)]
    pairs = range(n_qubits) if n_qubits > 2 else range(n_qubits - 1)
    parity = sum((bits[w] * bits[(w + 1) % n_qubits] for w in pairs), torch.zeros_like(index))
    return 1.0 - 2.0 * (parity % 2).to(torch.float32)


def _ry_layer(angles: torch.Tensor) -> torch.Tensor:
    """(G, q) angles -> (G, 2^q, 2^q): RY on every wire (wire 0 most significant)."""
    half = angles / 2
    cos, sin = torch.cos(half), torch.sin(half)
    matrix = torch.ones(angles.shape[0], 1, 1, dtype=angles.dtype, device=angles.device)
    for wire in range(angles.shape[1]):
        c, s = cos[:, wire, None, None], sin[:, wire, None, None]
        rotation = torch.cat([torch.cat([c, -s], 2), torch.cat([s, c], 2)], 1)  # (G, 2, 2)
        size = matrix.shape[1]
        matrix = (matrix[:, :, None, :, None] * rotation[:, None, :, None, :]).reshape(
            -1, size * 2, size * 2)
    return matrix


def circuit_unitaries(angles: torch.Tensor) -> torch.Tensor:
    """(G, layers, q) angles -> the G circuits' real orthogonal unitaries (G, 2^q, 2^q)."""
    n_qubits = angles.shape[2]
    signs = _cz_ring_signs(n_qubits).to(device=angles.device, dtype=angles.dtype)
    unitary = None
    for layer in range(angles.shape[1]):
        step = signs[None, :, None] * _ry_layer(angles[:, layer])  # CZ after the RY layer
        unitary = step if unitary is None else step @ unitary
    return unitary


def circuit_cores(angles: torch.Tensor, scales: torch.Tensor,
                  shape: tuple[int, int, int, int]) -> torch.Tensor:
    """(G, layers, q) angles and (G,) scales -> G cores of ``shape``: scale x block of U."""
    rank_in, rows, cols, rank_out = shape
    block = circuit_unitaries(angles)[:, : rank_in * rows, : cols * rank_out]
    return block.reshape(-1, rank_in, rows, cols, rank_out) * scales[:, None, None, None, None]


def initial_scale(shape: tuple[int, int, int, int]) -> float:
    """The scale that gives the block's entries the free cores' std 1/sqrt(R') (an
    orthogonal 2^q matrix has entries of std 2^(-q/2))."""
    return math.sqrt(2 ** circuit_qubits(shape) / shape[3])
