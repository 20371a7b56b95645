"""Torch modules of the normalization ops torch.nn lacks in the form archc needs."""
from __future__ import annotations

import torch
from torch import nn

# ---- normalization -------------------------------------------------------------------------------
class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm written out (opset 18 has no RMSNormalization, and the exporter no aten::rms_norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # type: ignore[operator]
        return y * self.weight if self.weight is not None else y
