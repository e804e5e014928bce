"""QTHA's per-token circuit, simulated for a whole batch of tokens at once in torch.

The circuit (arXiv 2503.12790 and its public PEFT fork): n qubits (n = the adapter's rank),
and per circuit layer k
    RY(h_i) on every wire i                      (angle re-encoding of the token's features)
    CRZ(phi1[k, i]) control i, target i+1        (a ring)
    RY(theta1[k, i]) on every wire
    CRZ(phi2[k, i]) control i, target i-1        (the reverse ring)
    RY(theta2[k, i]) on every wire
then <Z_i> of every wire: n outputs per token.

Why not PennyLane in the training loop: default.qubit with parameter broadcasting takes
about 1 s per adapted layer for 1,024 tokens at 8 qubits (60 layers: a minute a step), so
the same circuit is written here as state-vector algebra that exploits its structure:
every CRZ is diagonal, so a ring is ONE elementwise phase exp(i S phi), and an RY layer
is n batched 2x2 rotations. ``pennylane_expvals`` is the reference the tests compare it
with, values and gradients.
"""

from __future__ import annotations

from functools import lru_cache

import torch

#: Wire 0 is the most significant bit of a basis index (PennyLane's order).


@lru_cache(maxsize=16)
def _bits(n_qubits: int) -> torch.Tensor:
    """(2^n, n) 0/1 table: bit of wire i in basis state b."""
    index = torch.arange(2**n_qubits)
    return torch.stack([(index >> (n_qubits - 1 - w)) & 1 for w in range(n_qubits)], dim=1)


def ring_pairs(n_qubits: int, direction: int) -> list[tuple[int, int]]:
    """(control, target) of the CRZ ring: target = control + direction (mod n)."""
    return [(wire, (wire + direction) % n_qubits) for wire in range(n_qubits)]


@lru_cache(maxsize=16)
def _ring_phase_matrix(n_qubits: int, direction: int) -> torch.Tensor:
    """S (2^n, n): the ring's phase on basis state b is sum_i S[b, i] phi_i.

    CRZ(phi) multiplies |c=1, t=0> by exp(-i phi/2) and |c=1, t=1> by exp(+i phi/2)."""
    bits = _bits(n_qubits).to(torch.float32)
    columns = [bits[:, c] * (bits[:, t] - 0.5) for c, t in ring_pairs(n_qubits, direction)]
    return torch.stack(columns, dim=1)


def _product_state(angles: torch.Tensor) -> torch.Tensor:
    """RY(angle_i) on every wire of |0...0>: the real product state (T, 2^n)."""
    half = angles / 2
    state = torch.ones(angles.shape[0], 1, dtype=angles.dtype, device=angles.device)
    for wire in range(angles.shape[1]):
        factor = torch.stack([torch.cos(half[:, wire]), torch.sin(half[:, wire])], dim=1)
        state = (state[:, :, None] * factor[:, None, :]).reshape(state.shape[0], -1)
    return state


def _ry_layer_matrix(angles: torch.Tensor) -> torch.Tensor:
    """The real 2^n x 2^n matrix of RY(angle_i) on every wire (a Kronecker product)."""
    half = angles / 2
    matrix = torch.ones(1, 1, dtype=angles.dtype, device=angles.device)
    for wire in range(angles.shape[0]):
        cos, sin = torch.cos(half[wire]), torch.sin(half[wire])
        rotation = torch.stack([torch.stack([cos, -sin]), torch.stack([sin, cos])])
        matrix = torch.kron(matrix, rotation)
    return matrix


def _reencode(real: torch.Tensor, imag: torch.Tensor, angles: torch.Tensor,
              n_qubits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token RY(angle_i) on every wire of a general state (circuit layers after the first)."""
    half = angles / 2
    for wire in range(n_qubits):
        cos = torch.cos(half[:, wire])[:, None, None]
        sin = torch.sin(half[:, wire])[:, None, None]
        parts = []
        for part in (real, imag):
            view = part.reshape(part.shape[0], 2**wire, 2, -1)
            zero, one = view[:, :, 0], view[:, :, 1]
            parts.append(torch.stack([cos * zero - sin * one, sin * zero + cos * one],
                                     dim=2).reshape_as(part))
        real, imag = parts
    return real, imag


def qtha_expvals(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """<Z_i> of the QTHA circuit for every token.

    features: (T, n) encoding angles; weights: (layers, 4, n) = (phi1, theta1, phi2, theta2)
    per layer. Returns (T, n) float32. The state is kept as real and imaginary float32
    parts: the encoding of |0...0> is a product state, a CRZ ring one phase per basis
    state, an RY layer one real matrix product."""
    n_qubits = features.shape[1]
    features, weights = features.float(), weights.float()
    rings = [_ring_phase_matrix(n_qubits, d).to(features.device) for d in (+1, -1)]
    real = imag = None
    for layer in weights:
        phi1, theta1, phi2, theta2 = layer
        if real is None:
            real, imag = _product_state(features), torch.zeros(())
        else:
            real, imag = _reencode(real, imag, features, n_qubits)
        for ring, phi, theta in ((rings[0], phi1, theta1), (rings[1], phi2, theta2)):
            cos, sin = torch.cos(ring @ phi), torch.sin(ring @ phi)
            real, imag = real * cos - imag * sin, real * sin + imag * cos
            rotation = _ry_layer_matrix(theta).t()
            real, imag = real @ rotation, imag @ rotation
    probabilities = real**2 + imag**2
    z = 1.0 - 2.0 * _bits(n_qubits).to(device=features.device, dtype=torch.float32)
    return probabilities @ z


def pennylane_expvals(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The same circuit on PennyLane's default.qubit (broadcast over tokens, backprop):
    the reference for ``qtha_expvals``. Slow; for tests and benchmarks."""
    import pennylane as qml

    n_qubits = features.shape[1]
    device = qml.device("default.qubit", wires=n_qubits)

    @qml.qnode(device, interface="torch", diff_method="backprop")
    def circuit(x, w):
        for layer in w:
            for wire in range(n_qubits):
                qml.RY(x[..., wire], wires=wire)
            for wire, (control, target) in enumerate(ring_pairs(n_qubits, +1)):
                qml.CRZ(layer[0, wire], wires=[control, target])
            for wire in range(n_qubits):
                qml.RY(layer[1, wire], wires=wire)
            for wire, (control, target) in enumerate(ring_pairs(n_qubits, -1)):
                qml.CRZ(layer[2, wire], wires=[control, target])
            for wire in range(n_qubits):
                qml.RY(layer[3, wire], wires=wire)
        return [qml.expval(qml.Z(wire)) for wire in range(n_qubits)]

    return torch.stack(circuit(features, weights), dim=-1)
