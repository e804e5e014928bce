"""The quantum branch of QWTH: one parameterised circuit (or one per adapted layer) whose
basis-state probabilities, or Pauli expectation values, weight the tensor-train bonds.

Circuit: a Hadamard on every qubit, then ``circuit_layers`` of
``qml.StronglyEntanglingLayers`` with trainable angles theta; all 2^n probabilities
p(theta) are measured and centred as q = 2^n p - 1 (q = 0 for the uniform distribution).

Differentiation. Lightning's adjoint method refuses ``qml.probs``; but for an upstream
gradient g the vector-Jacobian product is a single expectation value,

    g^T dp/dtheta = d/dtheta <psi(theta)| diag(g) |psi(theta)>,

so :class:`_AdjointProbabilities` runs the probabilities forward and, in backward, ONE
adjoint-differentiated QNode measuring ``expval(SparseHamiltonian(diag(g)))``. On
``default.qubit`` the torch interface backpropagates directly; with shots (sampled,
hardware-like probabilities) parameter-shift is used.

Expectation-value readout. <Z_i> and <Z_i Z_j> are linear in p (``expval_matrix``: v = M p),
so their vector-Jacobian product is the same single adjoint run with diag(M^T g).

Per-layer circuits. G small circuits are one broadcast execution on default.qubit
(``BroadcastCircuits``): Lightning would run them one by one.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from qtune.errors import QtuneError

log = logging.getLogger(__name__)


def installed_devices() -> list[str]:
    """Names of the PennyLane devices installed here (entry points)."""
    import pennylane as qml

    return sorted(getattr(qml, "plugin_devices", {}).keys())


@lru_cache(maxsize=32)
def check_device_name(name: str) -> None:
    """Raise QtuneError when no installed PennyLane device is called ``name``."""
    devices = installed_devices()
    if devices and name not in devices:
        raise QtuneError(
            f"unknown quantum device {name!r}; installed PennyLane devices: {', '.join(devices)}"
            " (install the plugin that provides it, e.g. pennylane-lightning-gpu for lightning.gpu)"
        )


def resolve_diff_method(device: str, diff_method: str, shots: int | None) -> str:
    """Choose how to differentiate: adjoint on lightning.*, backprop on default.qubit,
    parameter-shift with shots or on any other device."""
    if diff_method != "auto":
        return diff_method
    if shots is not None:
        return "parameter-shift"
    if device.startswith("lightning."):
        return "adjoint"
    if device == "default.qubit":
        return "backprop"
    return "parameter-shift"


def _make_device(name: str, n_qubits: int):
    import pennylane as qml

    check_device_name(name)
    try:
        return qml.device(name, wires=n_qubits)
    except Exception as exc:  # plugins raise their own types
        raise QtuneError(f"could not start quantum device {name!r}: {exc}") from exc


def _apply_circuit(theta, n_qubits: int) -> None:
    """The circuit as PennyLane templates (QNode paths: backprop, parameter-shift)."""
    import pennylane as qml

    wires = range(n_qubits)
    for wire in wires:
        qml.Hadamard(wires=wire)
    qml.StronglyEntanglingLayers(theta, wires=wires)


def _circuit_ops(theta, n_qubits: int) -> list:
    """The same circuit as native gates (Hadamard, Rot, CNOT), for the direct device path.

    StronglyEntanglingLayers' default layer l: Rot(theta[l, i]) on every wire i, then
    CNOT(i, (i + r_l) mod n) with range r_l = (l mod (n - 1)) + 1. Tests check this
    against the template on default.qubit."""
    import pennylane as qml

    ops = [qml.Hadamard(wires=wire) for wire in range(n_qubits)]
    for layer in range(theta.shape[0]):
        for wire in range(n_qubits):
            ops.append(qml.Rot(*theta[layer, wire], wires=wire))
        if n_qubits > 1:
            reach = layer % (n_qubits - 1) + 1
            ops.extend(qml.CNOT(wires=[w, (w + reach) % n_qubits]) for w in range(n_qubits))
    return ops


class _AdjointProbabilities(torch.autograd.Function):
    """p(theta) with a backward pass made of one adjoint expectation-value gradient."""

    @staticmethod
    def forward(ctx, theta: torch.Tensor, runner: CircuitRunner) -> torch.Tensor:
        ctx.save_for_backward(theta)
        ctx.runner = runner
        probs = runner.exact_probabilities(theta.detach())
        return torch.as_tensor(probs, dtype=torch.float64).to(theta.dtype)

    @staticmethod
    def backward(ctx, grad_probs: torch.Tensor):
        (theta,) = ctx.saved_tensors
        grad = ctx.runner.vjp(theta.detach(), grad_probs.detach())
        return grad.to(theta.dtype), None


class CircuitRunner:
    """Builds the QNodes once for a device and computes differentiable probabilities."""

    def __init__(
        self, n_qubits: int, device: str = "lightning.qubit", diff_method: str = "auto",
        shots: int | None = None,
    ) -> None:
        import pennylane as qml

        self.n_qubits = n_qubits
        self.device_name = device
        self.shots = shots
        self.diff_method = resolve_diff_method(device, diff_method, shots)
        self.device = _make_device(device, n_qubits)
        wires = range(n_qubits)

        def probs_circuit(theta):
            _apply_circuit(theta, n_qubits)
            return qml.probs(wires=wires)

        if self.diff_method == "adjoint":
            # Straight to the device with native gates: the QNode/interface machinery costs
            # ~4x the simulation itself at 10 qubits (measured: 16 ms vs 62 ms fwd+bwd).
            from pennylane.devices import ExecutionConfig

            probe = qml.tape.QuantumScript(_circuit_ops(np.zeros((1, n_qubits, 3)), n_qubits),
                                           [qml.expval(qml.Z(0))], trainable_params=[0])
            try:
                self._adjoint_config = self.device.setup_execution_config(
                    ExecutionConfig(gradient_method="adjoint"))
                supported = self.device.supports_derivatives(self._adjoint_config, probe)
            except AttributeError:  # a legacy-API plugin device
                supported = False
            if not supported:
                raise QtuneError(
                    f"device {device!r} has no adjoint differentiation: use diff_method "
                    "'auto', 'backprop' or 'parameter-shift'"
                )
        else:
            qnode_kwargs = {"shots": shots} if shots is not None else {}
            self.probs_qnode = qml.QNode(probs_circuit, self.device, interface="torch",
                                         diff_method=self.diff_method, **qnode_kwargs)

    def vjp(self, theta: torch.Tensor, grad_probs: torch.Tensor) -> torch.Tensor:
        """g^T dp/dtheta as the adjoint gradient of <psi| diag(g) |psi>."""
        import pennylane as qml
        import scipy.sparse

        weights = grad_probs.to(torch.float64).cpu().numpy()
        matrix = scipy.sparse.diags(weights).tocsr()
        hamiltonian = qml.SparseHamiltonian(matrix, wires=range(self.n_qubits))
        angles = theta.to(torch.float64).cpu().numpy()
        tape = qml.tape.QuantumScript(_circuit_ops(angles, self.n_qubits),
                                      [qml.expval(hamiltonian)],
                                      trainable_params=list(range(angles.size)))
        grad = self.device.compute_derivatives(tape, self._adjoint_config)
        return torch.as_tensor(np.asarray(grad), dtype=torch.float64).reshape(theta.shape)

    def exact_probabilities(self, theta: torch.Tensor):
        """p(theta) as a float64 numpy array, straight from the device (adjoint path)."""
        import pennylane as qml

        angles = theta.to(torch.float64).cpu().numpy()
        tape = qml.tape.QuantumScript(_circuit_ops(angles, self.n_qubits),
                                      [qml.probs(wires=range(self.n_qubits))])
        return self.device.execute(tape)

    def probabilities(self, theta: torch.Tensor) -> torch.Tensor:
        """All 2^n basis-state probabilities, differentiable with respect to theta."""
        if self.diff_method == "adjoint":
            return _AdjointProbabilities.apply(theta, self)
        probs = self.probs_qnode(theta.to(torch.float64))
        return probs.to(theta.dtype)


def expval_matrix(n_qubits: int) -> torch.Tensor:
    """M with <Z_i> and <Z_i Z_j> (i < j) = M p for basis-state probabilities p.

    Rows: the n single-qubit values, then the n(n-1)/2 pairs; z_i(b) = 1 - 2 b_i with
    wire 0 the most significant bit of the basis index (PennyLane's order)."""
    index = torch.arange(2**n_qubits)
    bits = torch.stack([(index >> (n_qubits - 1 - wire)) & 1 for wire in range(n_qubits)])
    z = 1.0 - 2.0 * bits.to(torch.float64)
    pairs = [z[i] * z[j] for i in range(n_qubits) for j in range(i + 1, n_qubits)]
    return torch.cat([z, torch.stack(pairs)]) if pairs else z


def readout_size(n_qubits: int, readout: str) -> int:
    """How many values one circuit hands the bonds."""
    return n_qubits * (n_qubits + 1) // 2 if readout == "expval" else 2**n_qubits


class BroadcastCircuits:
    """G independent small circuits (same shape, own angles) as ONE broadcast execution on
    default.qubit, differentiated by backprop: per-layer circuits cost one call, not G."""

    def __init__(self, n_qubits: int) -> None:
        import pennylane as qml

        self.n_qubits = n_qubits
        device = _make_device("default.qubit", n_qubits)

        def probs_circuit(theta):
            _apply_circuit(theta, n_qubits)
            return qml.probs(wires=range(n_qubits))

        self.qnode = qml.QNode(probs_circuit, device, interface="torch", diff_method="backprop")

    def probabilities(self, theta: torch.Tensor) -> torch.Tensor:
        """theta (G, layers, n, 3) -> probabilities (G, 2^n)."""
        return self.qnode(theta.to(torch.float64)).to(theta.dtype)


class QuantumWeights(nn.Module):
    """Trainable circuit angles theta -> the values that weight the bonds: centred
    probabilities 2^n p(theta) - 1, or Pauli expectation values (``readout``).

    ``n_circuits`` > 1 gives every adapted layer its own circuit (a broadcast batch);
    forward then returns the G circuits' values one after another (G * size)."""

    def __init__(
        self, n_qubits: int, circuit_layers: int, device: str = "lightning.qubit",
        diff_method: str = "auto", shots: int | None = None, seed: int = 0,
        readout: str = "probs", n_circuits: int = 1,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        # Uniform angles: the output is a generic (Porter-Thomas-like) distribution, so q
        # carries structure and nonzero gradients from the first step; theta = 0 would
        # leave the state |+>^n (q = 0), a stationary point.
        shape = (circuit_layers, n_qubits, 3)
        if n_circuits > 1:
            shape = (n_circuits, *shape)
        self.theta = nn.Parameter(torch.rand(shape, generator=generator) * 2 * math.pi)
        self.n_qubits = n_qubits
        self.readout = readout
        self.n_circuits = n_circuits
        if n_circuits > 1:
            self.runner: CircuitRunner | BroadcastCircuits = BroadcastCircuits(n_qubits)
        else:
            self.runner = CircuitRunner(n_qubits, device, diff_method, shots)
        if readout == "expval":
            self.register_buffer("readout_matrix", expval_matrix(n_qubits), persistent=False)

    @property
    def size(self) -> int:
        """Values per circuit."""
        return readout_size(self.n_qubits, self.readout)

    def forward(self) -> torch.Tensor:
        probs = self.runner.probabilities(self.theta)
        if self.readout == "expval":
            values = probs.to(torch.float64) @ self.readout_matrix.t()
            return values.to(probs.dtype).reshape(-1)
        return (probs * 2**self.n_qubits - 1.0).reshape(-1)
