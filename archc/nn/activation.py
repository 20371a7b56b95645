"""Torch modules of activations torch.nn has no class for."""
from __future__ import annotations

import torch
from torch import nn


class Clamp(nn.Module):
    """torch.clamp with optional bounds (exported as ONNX Clip)."""

    def __init__(self, min: float | None, max: float | None) -> None:
        super().__init__()
        self.min, self.max = min, max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self.min, self.max)

    def extra_repr(self) -> str:
        return f"min={self.min}, max={self.max}"
