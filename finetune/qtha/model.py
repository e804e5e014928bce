"""``QTHAModel``: Origin Quantum's per-token quantum tensor hybrid adapter (QTHA).

In every adapted linear layer, for every token x:

    h = A x                                  tensor-train down-projection, A: (r, d_in)
    z = W_q VQC(h) + W_c h                   circuit on r qubits (see circuit.py) + classical
                                             branch, fused by trainable r x r matrices
    y = base(x) + (alpha / r) B z            tensor-train up-projection, B: (d_out, r)

B's last core starts at zero, so the model starts as the base model. The circuit's output
depends on the token, so the update is not a fixed matrix: QTHA cannot be merged into the
base weights nor exported as a LoRA, and vLLM cannot serve it without a model plugin
(docs/method.md). It is trained and evaluated in process.

Differences from the paper's code (QLLM-peft), kept because they are forced by size: its
tensor-train layers map d_in to a width of 256 and then a dense layer to r; at SmolLM2's
d = 576 that dense layer alone would cost more than the whole budget, so the tensor train
maps straight to r here (as QWTH's A and B do).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from qtune.finetune.qtha import check_qtha_rank
from qtune.finetune.qtha.circuit import qtha_expvals
from qtune.finetune.qwth.config import QWTHConfig
from qtune.finetune.qwth.layer import TTFactor
from qtune.finetune.qwth.tensor import tt_matrices_batched
from qtune.finetune.wrapped import WrappedModel, replace_module, target_linears
from torch import nn

from qtune import adapter_format as fmt
from qtune.errors import QtuneError

CONFIG_FILE, WEIGHTS_FILE = fmt.QTHA_CONFIG_FILE, fmt.QTHA_WEIGHTS_FILE


def _dense(factor: TTFactor) -> torch.Tensor:
    """The factor's matrix from its cores (unweighted bonds)."""
    return tt_matrices_batched([core[None] for core in factor.cores])[0]


class QTHALinear(nn.Module):
    """A frozen ``nn.Linear`` plus QTHA's per-token quantum-classical low-rank update."""

    def __init__(self, base_layer: nn.Linear, config: QWTHConfig,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        r = config.r
        self.r, self.scaling = r, config.scaling
        a_std = 1.0 / math.sqrt(3 * self.in_features)
        self.qtha_A = TTFactor(r, self.in_features, config.n_factors, config.tt_rank, a_std,
                               False, generator)
        self.qtha_B = TTFactor(self.out_features, r, config.n_factors, config.tt_rank, 0.0,
                               True, generator)
        bound = 1.0 / math.sqrt(r)  # kaiming-uniform(a=sqrt(5)) of an r x r layer
        self.fusion_quantum = nn.Parameter((torch.rand(r, r, generator=generator) * 2 - 1) * bound)
        self.fusion_classical = nn.Parameter(
            (torch.rand(r, r, generator=generator) * 2 - 1) * bound)
        # (phi1, theta1, phi2, theta2) per circuit layer, uniform angles as QWTH's.
        self.circuit_weights = nn.Parameter(
            torch.rand(config.circuit_layers, 4, r, generator=generator) * 2 * math.pi)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        with torch.autocast(device_type=x.device.type, enabled=False):
            tokens = x.reshape(-1, self.in_features).float()
            hidden = tokens @ _dense(self.qtha_A).t()
            quantum = qtha_expvals(hidden, self.circuit_weights)
            fused = quantum @ self.fusion_quantum.t() + hidden @ self.fusion_classical.t()
            update = (fused @ _dense(self.qtha_B).t()) * self.scaling
        return result + update.reshape(*x.shape[:-1], self.out_features).to(result.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, qubits=r={self.r}"


class QTHAModel(WrappedModel):
    """A frozen base model with QTHA adapters on its target linear layers."""

    def __init__(self, base_model: nn.Module, config: QWTHConfig) -> None:
        validate_qtha(config)
        super().__init__(base_model)
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        self.adapted: dict[str, QTHALinear] = {}
        for name, module in target_linears(base_model, config.target_modules, "QTHA"):
            layer = QTHALinear(module, config, generator).to(module.weight.device)
            replace_module(base_model, name, layer)
            self.adapted[name] = layer

    def parameter_groups(self, lr: float) -> list[dict]:
        """One AdamW group (QTHA's designs tune one rate)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]



def validate_qtha(config: QWTHConfig) -> None:
    """QWTH's checks (rank, cores, targets) plus QTHA's bound on the qubit count."""
    config.validate(check_device=False)
    check_qtha_rank(config.r)


def get_qtha_model(base_model: nn.Module, config: QWTHConfig) -> QTHAModel:
    """Wrap ``base_model`` (modified in place: targets become QTHALinear layers)."""
    return QTHAModel(base_model, config)


def save_qtha(model: QTHAModel, folder: str | Path) -> Path:
    """The trained tensors and the config (QTHA has no PEFT form)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fmt.write_json(folder / CONFIG_FILE, model.config.to_dict())
    save_file(model.compact_state_dict(), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    return folder


def load_qtha(base_model: nn.Module, folder: str | Path) -> QTHAModel:
    """Rebuild a QTHAModel on ``base_model`` from a ``save_qtha`` folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise QtuneError(f"{folder} is not a QTHA adapter folder: {name} is missing")
    config = QWTHConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    model = QTHAModel(base_model, config)
    model.load_trainable(load_file(str(folder / WEIGHTS_FILE)), folder)
    return model
