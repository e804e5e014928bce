"""LoRA-XS (Bałazy et al., 2024): the update of a frozen weight W is A·R·B, where A = U_r·S_r
and B = V_rᵀ come from the truncated SVD of W itself and stay frozen, and only the r×r
matrix R trains (r² parameters per layer, against LoRA's r·(in + out)). R starts at zero,
so the adapter starts as the base model, as LoRA does; its gradient AᵀGBᵀ is not zero.
It exports exactly to a PEFT LoRA of rank r: lora_A = B, lora_B = A·R."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from qtune.finetune.methods.base import AdapterConfig
from qtune.finetune.wrapped import WrappedModel, replace_module, target_linears
from torch import nn


class LoRAXSLinear(nn.Module):
    def __init__(self, base_layer: nn.Linear, r: int, scaling: float) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.scaling = scaling
        weight = base_layer.weight.detach().float()
        if r > min(weight.shape):
            from qtune.errors import QtuneError

            raise QtuneError(f"LoRA-XS rank {r} exceeds the layer's smallest side "
                             f"{min(weight.shape)}")
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        self.register_buffer("xs_A", (u[:, :r] * s[:r]).contiguous())  # (out, r)
        self.register_buffer("xs_B", vh[:r].contiguous())  # (r, in)
        self.xs_R = nn.Parameter(torch.zeros(r, r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.linear(F.linear(F.linear(x.to(self.xs_B.dtype), self.xs_B), self.xs_R), self.xs_A)
        return self.base_layer(x) + (self.scaling * low).to(x.dtype)

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of the exported LoRA: lora_A = B (r, in), lora_B = A·R (out, r)."""
        return self.xs_B, self.xs_A @ self.xs_R


class LoRAXSModel(WrappedModel):
    def __init__(self, base_model: nn.Module, config: AdapterConfig) -> None:
        super().__init__(base_model)
        self.config = config
        self.adapted: dict[str, LoRAXSLinear] = {}
        for name, module in target_linears(base_model, config.target_modules, "LoRA-XS"):
            layer = LoRAXSLinear(module, config.r, config.scaling)
            replace_module(base_model, name, layer)
            self.adapted[name] = layer

    def lora_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {name: layer.lora_factors() for name, layer in self.adapted.items()}
