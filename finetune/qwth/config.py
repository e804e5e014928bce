"""Configuration of the quantum-weighted tensor hybrid (QWTH) adapter.

One typed dataclass, in the style of PEFT's ``LoraConfig``: defaults live here, and
``validate()`` turns bad values into a :class:`~qtune.errors.QtuneError` that says what
to change. The config is saved beside every adapter (``qwth_config.json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from qtune.adapter_format import VLLM_LORA_RANKS
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
class QWTHConfig:
    """Settings of a QWTH adapter.

    r, lora_alpha: rank and scaling (alpha / r) of the LoRA the adapter exports to.
    target_modules: ``nn.Linear`` names matched by suffix, as in PEFT.
    tt_rank: bond dimension R of the tensor-train (MPO) cores of every A and B.
    n_factors: how many factors each row / column dimension is split into (cores per matrix).
    n_qubits, circuit_layers: size of the one circuit that weights every bond.
    device, diff_method, shots: where and how the circuit runs (any installed PennyLane
        device, e.g. lightning.qubit, lightning.gpu or a hardware plugin; shots=None gives
        exact probabilities, an int sampled ones, differentiated by parameter shift).
    fusion_init: initial (lambda_classical, lambda_quantum) of every adapted layer.
    quantum: the quantum branch, one of QUANTUM_BRANCHES (controls for the study).
    readout, circuit_scope, init: the designs of READOUTS, CIRCUIT_SCOPES and INITS.
    core_circuit: the middle core of every A and B (of three or more cores) is a block of
        its own real circuit's unitary (circuit_layers layers of RY + a CZ ring) times a
        trainable scale, instead of a free core (cores.py).
    lr_scale_fusion, lr_scale_quantum: the learning rates of the fusion scalars and of the
        quantum branch (circuit angles or control vector) as multiples of the run's rate;
        the tensor-train cores train at the run's rate.
    seed: seeds the initial cores and circuit angles (a training run sets it to its own seed).
    """

    r: int = 8
    lora_alpha: float = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    tt_rank: int = 4
    n_factors: int = 3
    n_qubits: int = 10
    circuit_layers: int = 4
    device: str = "lightning.qubit"
    diff_method: str = "auto"
    shots: int | None = None
    fusion_init: tuple[float, float] = field(default=(1.0, 0.1))
    quantum: str = "circuit"
    readout: str = "probs"
    circuit_scope: str = "model"
    init: str = "zero"
    core_circuit: bool = False
    lr_scale_fusion: float = 1.0
    lr_scale_quantum: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so configs compare equal after a round trip.
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        self.fusion_init = tuple(self.fusion_init)  # type: ignore[assignment]

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    @property
    def export_rank(self) -> int:
        """Rank of the exported LoRA: r, or 2r after a non-zero start ([A; A0], [B, -B0])."""
        return 2 * self.r if self.init == "nonzero" else self.r

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        data["fusion_init"] = list(self.fusion_init)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QWTHConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise QtuneError(
                f"unknown QWTH config keys {unknown}; known keys: {sorted(known)}"
            )
        return cls(**data)

    def validate(self, check_device: bool = True) -> QWTHConfig:
        """Raise QtuneError on values the adapter or vLLM cannot use; return self."""
        if self.r not in VLLM_LORA_RANKS:
            raise QtuneError(
                f"rank r={self.r} is not supported: vLLM serves LoRA ranks {VLLM_LORA_RANKS}"
            )
        if not self.lora_alpha > 0:
            raise QtuneError(f"lora_alpha must be positive, got {self.lora_alpha}")
        if not self.target_modules or not all(
            isinstance(name, str) and name for name in self.target_modules
        ):
            raise QtuneError(
                f"target_modules must be non-empty module names, got {self.target_modules!r}"
            )
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
        if self.init == "nonzero" and 2 * self.r not in VLLM_LORA_RANKS:
            raise QtuneError(f"init 'nonzero' exports a LoRA of rank 2r = {2 * self.r}, which "
                             f"vLLM does not serve (ranks {VLLM_LORA_RANKS}): lower r")
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
