"""``QWTHModel``: wraps a causal LM, freezes it and adapts its target linear layers.

Per forward pass (training) the model
1. runs the ONE circuit: q = 2^n p(theta) - 1 (2^n numbers);
2. gives every internal bond of every A_l and B_l its own R consecutive entries of q
   (cyclically if the adapter has more bond entries than 2^n) and turns them into bond
   weights lambda_c,l + lambda_q,l * q;
3. builds all A_l, B_l from their tensor-train cores, batching matrices of equal shape;
4. hands them to the QWTHLinear layers and calls the base model.
Without gradients (evaluation, generation) the factors are cached until a trainable
parameter changes, so generation runs the circuit once, not once per token.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable

import torch
from qtune.finetune.qwth.circuit import QuantumWeights, readout_size
from qtune.finetune.qwth.config import QWTHConfig
from qtune.finetune.qwth.cores import circuit_core_index, circuit_cores, circuit_qubits
from qtune.finetune.qwth.layer import QWTHLinear, TTFactor
from qtune.finetune.qwth.tensor import (
    core_shapes,
    tt_matrices_batched,
    tt_matrix_shape,
    tt_parameter_count,
)
from qtune.finetune.wrapped import WrappedModel, replace_module, target_linears
from torch import nn

from qtune.errors import QtuneError

log = logging.getLogger(__name__)


def quantum_parameter_count(config: QWTHConfig, n_layers: int = 1) -> int:
    """Trainable parameters of the quantum branch: the circuit's 3 angles per qubit and
    layer (per adapted layer with circuit_scope "layer"), the control vector's 2^n
    entries, or none (frozen circuit, no branch)."""
    circuits = n_layers if config.circuit_scope == "layer" else 1
    return {"circuit": 3 * config.n_qubits * config.circuit_layers * circuits,
            "vector": 2**config.n_qubits}.get(config.quantum, 0)


def qwth_parameter_count(
    layer_shapes: Iterable[tuple[int, int]], config: QWTHConfig
) -> int:
    """Trainable parameters of a QWTH adapter on layers of shape (d_in, d_out):

    sum_l [cores(A_l: r x d_in) + cores(B_l: d_out x r) + fusion scalars (2; 1 without a
    quantum branch)] + the quantum branch's, where cores(M) = sum_k R_{k-1} m_k n_k R_k."""
    layer_shapes = list(layer_shapes)
    total = quantum_parameter_count(config, len(layer_shapes))
    for d_in, d_out in layer_shapes:
        total += factor_parameter_count(config.r, d_in, config)
        total += factor_parameter_count(d_out, config.r, config)
        total += 1 if config.quantum == "none" else 2
    return total


def factor_parameter_count(rows: int, cols: int, config: QWTHConfig) -> int:
    """One TT-matrix's trainable parameters: its cores, or with ``core_circuit`` its free
    cores plus the middle core's circuit angles (qubits x layers) and scale."""
    total = tt_parameter_count(rows, cols, config.n_factors, config.tt_rank)
    row_factors, col_factors = tt_matrix_shape(rows, cols, config.n_factors)
    shapes = core_shapes(row_factors, col_factors, config.tt_rank)
    index = circuit_core_index(len(shapes)) if config.core_circuit else None
    if index is not None:
        middle = shapes[index]
        total += circuit_qubits(middle) * config.circuit_layers + 1 - math.prod(middle)
    return total


def lora_parameter_count(layer_shapes: Iterable[tuple[int, int]], r: int) -> int:
    """Trainable parameters of a rank-r LoRA on the same layers: sum_l r (d_in + d_out)."""
    return sum(r * (d_in + d_out) for d_in, d_out in layer_shapes)


class _BondPlan:
    """Which entries of q and which fusion scalars weight the bonds of one batch of
    same-shaped TT matrices."""

    def __init__(self, names: list[str], factors: list[TTFactor], layers: list[QWTHLinear],
                 q_index: list[torch.Tensor]) -> None:
        self.names = names
        self.factors = factors
        self.layers = layers
        self.q_index = q_index  # per bond: (G, R_k) long


class QWTHModel(WrappedModel):
    """A frozen base model with QWTH adapters on its target linear layers."""

    def __init__(self, base_model: nn.Module, config: QWTHConfig) -> None:
        config.validate()
        super().__init__(base_model)
        self.config = config
        self.adapted: dict[str, QWTHLinear] = {}
        self._inject(base_model, config)
        self.circuit: QuantumWeights | None = None
        self.quantum_vector: nn.Parameter | None = None
        self._make_quantum_branch(config)
        self._plans = self._plan_bonds()
        if config.init == "nonzero":
            self._freeze_initial_update()
        self._cache_key: tuple | None = None
        self._hook = base_model.register_forward_pre_hook(self._refresh_hook)

    # -- construction -------------------------------------------------------------
    def _inject(self, base_model: nn.Module, config: QWTHConfig) -> None:
        if any(isinstance(m, QWTHLinear) for m in base_model.modules()):
            raise QtuneError("this model already has QWTH layers: start from a fresh base model")
        generator = torch.Generator().manual_seed(config.seed)
        for name, module in target_linears(base_model, config.target_modules, "QWTH"):
            self._warn_if_fewer_cores(name, module, config)
            layer = QWTHLinear(module, config.r, config.scaling, config.n_factors,
                               config.tt_rank, config.fusion_init, generator,
                               zero_start=config.init == "zero",
                               core_circuit_layers=config.circuit_layers if config.core_circuit
                               else 0)
            layer.to(module.weight.device)
            replace_module(base_model, name, layer)
            self.adapted[name] = layer

    def _make_quantum_branch(self, config: QWTHConfig) -> None:
        """The circuit, or the control that replaces it (see QUANTUM_BRANCHES)."""
        if config.quantum == "none":
            return
        n_circuits = len(self.adapted) if config.circuit_scope == "layer" else 1
        circuit = QuantumWeights(config.n_qubits, config.circuit_layers, config.device,
                                 config.diff_method, config.shots, seed=config.seed,
                                 readout=config.readout, n_circuits=n_circuits)
        if config.quantum == "vector":
            # Start from the circuit's own initial distribution: the same function at
            # step 0, so only what is trainable differs.
            with torch.no_grad():
                probabilities = (circuit() + 1.0) / circuit.size
            self.quantum_vector = nn.Parameter(torch.log(probabilities.float().clamp_min(1e-12)))
            return
        if config.quantum == "frozen":
            circuit.requires_grad_(False)
        self.circuit = circuit

    @property
    def quantum_size(self) -> int:
        """Values one circuit gives the bonds."""
        return readout_size(self.config.n_qubits, self.config.readout)

    def _freeze_initial_update(self) -> None:
        """QuanTA's start: keep the step-0 factors, subtracted from every later update."""
        with torch.no_grad():
            matrices = self._build_matrices()
        for name, layer in self.adapted.items():
            layer.set_initial_factors(matrices[name]["A"], matrices[name]["B"])

    def quantum_values(self) -> torch.Tensor | None:
        """q: the 2^n centred values that weight the bonds (None without a quantum branch)."""
        if self.quantum_vector is not None:
            return self.quantum_size * torch.softmax(self.quantum_vector, dim=0) - 1.0
        if self.circuit is None:
            return None
        if self.config.quantum == "frozen":
            with torch.no_grad():  # fixed angles: nothing to differentiate
                return self.circuit()
        return self.circuit()

    @staticmethod
    def _warn_if_fewer_cores(name: str, module: nn.Linear, config: QWTHConfig) -> None:
        for rows, cols in ((config.r, module.in_features), (module.out_features, config.r)):
            row_factors, _ = tt_matrix_shape(rows, cols, config.n_factors)
            if len(row_factors) < config.n_factors:
                log.warning("%s: %dx%d splits into %d cores, not %d (too few prime factors)",
                            name, rows, cols, len(row_factors), config.n_factors)

    def _plan_bonds(self) -> list[_BondPlan]:
        """Assign consecutive (cyclic) slices of q to every bond, then group by shape.

        One circuit: the slices run over the whole adapter. One circuit per layer: layer
        l reads only its own circuit's values (offset l * size in the flattened q)."""
        size = self.quantum_size
        per_layer = self.config.circuit_scope == "layer"
        cursor, total, most = 0, 0, 0
        groups: dict[tuple, list] = defaultdict(list)
        for number, (name, layer) in enumerate(self.adapted.items()):
            offset = number * size if per_layer else 0
            cursor = 0 if per_layer else cursor
            for factor in (layer.qwth_A, layer.qwth_B):
                indices = []
                for bond in factor.bond_sizes:
                    indices.append(offset + torch.arange(cursor, cursor + bond) % size)
                    cursor += bond
                    total += bond
                groups[factor.signature].append((name, factor, layer, indices))
            most = max(most, cursor)
        if most > size and self.config.quantum != "none":
            log.warning(
                "%d bond weights share a circuit whose %s readout gives %d values: they are "
                "reused cyclically", most, self.config.readout, size,
            )
        self.n_bond_entries = total
        plans = []
        for members in groups.values():
            n_bonds = len(members[0][1].bond_sizes)
            q_index = [torch.stack([m[3][k] for m in members]) for k in range(n_bonds)]
            plans.append(_BondPlan([m[0] for m in members], [m[1] for m in members],
                                   [m[2] for m in members], q_index))
        return plans

    # -- building the factors ------------------------------------------------------
    def _build_matrices(self) -> dict[str, dict[str, torch.Tensor]]:
        """All A_l, B_l from one circuit evaluation: {module name: {"A"|"B": matrix}}."""
        q = self.quantum_values()
        out: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        for plan in self._plans:
            cores = self._batched_cores(plan.factors)
            fusion = torch.stack([layer.fusion for layer in plan.layers])  # (G, 2)
            device = cores[0].device
            if q is None:  # no quantum branch: the classical fusion weight alone
                weights = [fusion[:, :1].expand(-1, index.shape[1]) for index in plan.q_index]
            else:
                weights = [fusion[:, :1] + fusion[:, 1:] * q.to(device)[index.to(device)]
                           for index in plan.q_index]
            matrices = tt_matrices_batched(cores, weights)
            for name, factor, layer, matrix in zip(plan.names, plan.factors, plan.layers, matrices,
                                                   strict=True):
                out[name]["A" if factor is layer.qwth_A else "B"] = matrix
        return out

    @staticmethod
    def _batched_cores(factors: list[TTFactor]) -> list[torch.Tensor]:
        """Core k of every factor stacked (G, ...); a circuit-generated core built in batch."""
        first = factors[0]
        cores = [torch.stack([f.cores[k] for f in factors]) for k in range(len(first.cores))]
        if first.circuit_index is not None:
            angles = torch.stack([f.core_angles for f in factors])
            scales = torch.stack([f.core_scale for f in factors])
            cores.insert(first.circuit_index,
                         circuit_cores(angles, scales, first.shapes[first.circuit_index]))
        return cores

    def _trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def refresh_factors(self, force: bool = False) -> None:
        """Build and install every layer's A and B (cached while gradients are off)."""
        grad = torch.is_grad_enabled()
        key = (False, tuple(p._version for p in self._trainable()),
               tuple(p.data_ptr() for p in self._trainable()))
        if not force and not grad and key == self._cache_key:
            return
        matrices = self._build_matrices()
        for name, layer in self.adapted.items():
            layer.set_factors(matrices[name]["A"], matrices[name]["B"])
        self._cache_key = None if grad else key

    def _refresh_hook(self, module, args):
        self.refresh_factors()
        return None

    def generate(self, *args, **kwargs):
        with torch.no_grad():
            self.refresh_factors()
        return super().generate(*args, **kwargs)

    # -- counting and export -------------------------------------------------------
    def layer_shapes(self) -> dict[str, tuple[int, int]]:
        return {name: (layer.in_features, layer.out_features)
                for name, layer in self.adapted.items()}

    def num_trainable_parameters(self) -> int:
        """Parameters training can change. Without a quantum branch lambda_q multiplies
        nothing (its gradient is zero), so it is not counted."""
        unused = len(self.adapted) if self.config.quantum == "none" else 0
        return super().num_trainable_parameters() - unused

    def lora_parameter_count(self) -> int:
        return lora_parameter_count(self.layer_shapes().values(), self.config.r)

    @property
    def export_rank(self) -> int:
        return self.config.export_rank

    @property
    def export_alpha(self) -> float:
        """alpha of the export, keeping alpha / rank = the adapter's scaling."""
        return self.config.scaling * self.export_rank

    def lora_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{module path in the base model: (A [rank, in], B [out, rank])}, fp32, detached,
        with B A = the adapter's own update (minus the initial one after a non-zero start)."""
        with torch.no_grad():
            matrices = self._build_matrices()
        factors = {}
        for name, layer in self.adapted.items():
            a, b = matrices[name]["A"].detach().float(), matrices[name]["B"].detach().float()
            if layer.starts_nonzero:
                a = torch.cat([a, layer.initial_A.float()], dim=0)
                b = torch.cat([b, -layer.initial_B.float()], dim=1)
            factors[name] = (a.cpu().contiguous(), b.cpu().contiguous())
        return factors

    def parameter_groups(self, lr: float) -> list[dict]:
        """AdamW groups: the cores at ``lr``, the fusion scalars and the quantum branch at
        their configured multiples (one group when both multiples are 1, as before)."""
        scales = {"fusion": self.config.lr_scale_fusion, "quantum": self.config.lr_scale_quantum}
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if all(scale == 1.0 for scale in scales.values()):  # the order resumes rely on
            return [{"params": [p for _, p in trainable], "lr": lr}]
        groups: dict[str, list[nn.Parameter]] = {"cores": [], "fusion": [], "quantum": []}
        for name, parameter in trainable:
            kind = ("fusion" if name.endswith(".fusion") else
                    "quantum" if name.startswith(("circuit.", "quantum_vector"))
                    or name.endswith(".core_angles") else "cores")
            groups[kind].append(parameter)
        return [{"params": members, "lr": lr * scales.get(kind, 1.0), "name": kind}
                for kind, members in groups.items() if members]


def get_qwth_model(base_model: nn.Module, config: QWTHConfig | None = None) -> QWTHModel:
    """Wrap ``base_model`` (modified in place: targets become QWTHLinear layers)."""
    return QWTHModel(base_model, config or QWTHConfig())
