"""The quantum branch of QWTH: one parameterised circuit whose basis-state probabilities
weight every tensor-train bond of the adapter.

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


class QuantumWeights(nn.Module):
    """Trainable circuit angles theta -> centred probabilities q = 2^n p(theta) - 1."""

    def __init__(
        self, n_qubits: int, circuit_layers: int, device: str = "lightning.qubit",
        diff_method: str = "auto", shots: int | None = None, seed: int = 0,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        # Uniform angles: the output is a generic (Porter-Thomas-like) distribution, so q
        # carries structure and nonzero gradients from the first step; theta = 0 would
        # leave the state |+>^n (q = 0), a stationary point.
        shape = (circuit_layers, n_qubits, 3)
        self.theta = nn.Parameter(torch.rand(shape, generator=generator) * 2 * math.pi)
        self.n_qubits = n_qubits
        self.runner = CircuitRunner(n_qubits, device, diff_method, shots)

    @property
    def size(self) -> int:
        return 2**self.n_qubits

    def forward(self) -> torch.Tensor:
        probs = self.runner.probabilities(self.theta)
        return probs * self.size - 1.0
