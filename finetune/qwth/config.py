"""Configuration of the quantum-weighted tensor hybrid (QWTH) adapter.

One typed dataclass, in the style of PEFT's ``LoraConfig``: defaults live here, and
``validate()`` turns bad values into a :class:`~qtune.errors.QtuneError` that says what
to change. The config is saved beside every adapter (``qwth_config.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qtune.finetune.methods.base import AdapterConfig

from qtune.errors import QtuneError

#: Ways to differentiate the circuit; "auto" picks per device (see ``resolve_diff_method``).
DIFF_METHODS = ("auto", "adjoint", "backprop", "parameter-shift")
MAX_QUBITS = 24
#: What weights the tensor-train bonds besides the classical fusion weight lambda_c:
#: "circuit" the trained circuit (QWTH); the controls that isolate the circuit keep the
#: same cores and change only this branch: "frozen" the circuit with its random angles
#: fixed, "vector" a trainable classical vector of the circuit's 2^n outputs (softmax,
#: centred like the circuit's probabilities), "none" nothing (the plain tensor-train adapter).
QUANTUM_BRANCHES = ("circuit", "frozen", "vector", "none")
#: What the circuit hands the bonds: "probs" the 2^n centred probabilities 2^n p - 1;
#: "expval" the n(n+1)/2 Pauli expectation values <Z_i> and <Z_i Z_j> (already centred).
READOUTS = ("probs", "expval")
#: How many circuits: "model" one for every bond of the adapter; "layer" one small circuit
#: per adapted layer (its own angles), simulated as one broadcast batch.
CIRCUIT_SCOPES = ("model", "layer")
#: Where the update starts: "zero" (B = 0, as LoRA); "nonzero" (QuanTA's way: every core
#: random, the frozen initial update subtracted, so the update is 0 at step 0 yet every
#: core gets a gradient from step 1; exported as a LoRA of rank 2r).
INITS = ("zero", "nonzero")


@dataclass
class QWTHConfig(AdapterConfig):
    """Settings of a QWTH adapter: tensor-train cores generate the LoRA factors A and B of
    every target layer, and one parameterised circuit weights every bond between them."""

    tt_rank: int = 4
    """QWTH: bond dimension of the tensor-train cores of every A and B."""
    n_factors: int = 3
    """QWTH: how many factors each row or column dimension is split into (cores per matrix)."""
    n_qubits: int = 10
    """QWTH: qubits of the circuit that weights every bond."""
    circuit_layers: int = 4
    """QWTH: entangling layers of the circuit."""
    device: str = "lightning.qubit"
    """QWTH: any installed PennyLane device, e.g. lightning.qubit, default.qubit, lightning.gpu or a hardware plugin."""
    diff_method: str = "auto"
    """QWTH: how the circuit is differentiated: auto (per device and shots), adjoint, backprop or parameter-shift."""
    shots: int | None = None
    """QWTH: measurement shots for sampling devices, differentiated by parameter shift (unset: exact probabilities)."""
    fusion_init: tuple[float, float] = field(default=(1.0, 0.1))
    """QWTH: initial classical and quantum fusion weights of every adapted layer."""
    quantum: str = "circuit"
    """QWTH: the quantum branch: circuit, or the study's controls frozen, vector, none (docs/method.md)."""
    readout: str = "probs"
    """QWTH: what the circuit hands the bonds: probs (2^n centred probabilities) or expval (Pauli Z and ZZ expectations)."""
    circuit_scope: str = "model"
    """QWTH: one circuit for the model, or one per adapted layer (layer; needs device default.qubit)."""
    init: str = "zero"
    """QWTH: zero (B = 0, as LoRA) or nonzero (QuanTA's start, exported at rank 2r)."""
    core_circuit: bool = False
    """QWTH: the middle core of every A and B is a block of its own small circuit's unitary times a trainable scale."""
    lr_scale_fusion: float = 1.0
    """QWTH: the fusion weights' learning rate as a multiple of the run's."""
    lr_scale_quantum: float = 1.0
    """QWTH: the quantum branch's learning rate (circuit angles or control vector) as a multiple of the run's."""
    seed: int = 0
    """Seeds the initial cores and circuit angles (a training run sets it to its own seed)."""

    FLAG_NAMES: ClassVar[dict[str, str]] = {**AdapterConfig.FLAG_NAMES, "n_qubits": "--qubits"}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fusion_init = tuple(self.fusion_init)  # type: ignore[assignment]

    @property
    def export_rank(self) -> int:
        """Rank of the exported LoRA: r, or 2r after a non-zero start ([A; A0], [B, -B0])."""
        return 2 * self.r if self.init == "nonzero" else self.r

    def validate(self, check_device: bool = True) -> QWTHConfig:
        """Raise QtuneError on values the adapter or vLLM cannot use; return self."""
        super().validate()
        if not 1 <= self.tt_rank <= 256:
            raise QtuneError(f"tt_rank must be in 1..256, got {self.tt_rank}")
        if not 1 <= self.n_factors <= 8:
            raise QtuneError(f"n_factors must be in 1..8, got {self.n_factors}")
        if not 1 <= self.n_qubits <= MAX_QUBITS:
            raise QtuneError(f"n_qubits must be in 1..{MAX_QUBITS}, got {self.n_qubits}")
        if not 1 <= self.circuit_layers <= 64:
            raise QtuneError(f"circuit_layers must be in 1..64, got {self.circuit_layers}")
        if self.diff_method not in DIFF_METHODS:
            raise QtuneError(
                f"diff_method {self.diff_method!r} is not one of {DIFF_METHODS}"
            )
        if self.shots is not None and (not isinstance(self.shots, int) or self.shots < 1):
            raise QtuneError(f"shots must be None (exact) or a positive integer, got {self.shots}")
        if self.shots is not None and self.diff_method in ("adjoint", "backprop"):
            raise QtuneError(
                f"diff_method {self.diff_method!r} needs exact probabilities: "
                "use shots=None or diff_method 'parameter-shift' / 'auto'"
            )
        if self.quantum not in QUANTUM_BRANCHES:
            raise QtuneError(
                f"quantum {self.quantum!r} is not one of {', '.join(QUANTUM_BRANCHES)}"
            )
        for name, allowed in (("readout", READOUTS), ("circuit_scope", CIRCUIT_SCOPES),
                              ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise QtuneError(f"{name} {getattr(self, name)!r} is not one of "
                                 f"{', '.join(allowed)}")
        if self.circuit_scope == "layer" and (self.shots is not None
                                              or self.device != "default.qubit"):
            raise QtuneError("circuit_scope 'layer' runs its circuits as one broadcast batch "
                             "on default.qubit with exact probabilities: set "
                             "device = \"default.qubit\" (--device default.qubit) and no shots")
        if self.core_circuit and self.n_factors < 3:
            raise QtuneError(f"core_circuit generates the middle core, so it needs n_factors "
                             f">= 3 (got {self.n_factors})")
        if self.quantum == "vector" and (self.readout, self.circuit_scope) != ("probs", "model"):
            raise QtuneError("quantum 'vector' stands in for one circuit's probabilities: use "
                             "readout 'probs' and circuit_scope 'model'")
        for name in ("lr_scale_fusion", "lr_scale_quantum"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 1000):
                raise QtuneError(f"{name} must be a multiple of the learning rate in (0, 1000], "
                                 f"got {value!r}")
        if len(self.fusion_init) != 2:
            raise QtuneError(f"fusion_init must be (lambda_c, lambda_q), got {self.fusion_init}")
        if check_device and self.quantum != "none":
            from qtune.finetune.qwth.circuit import check_device_name

            check_device_name(self.device)
        return self
