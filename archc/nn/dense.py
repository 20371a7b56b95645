"""Torch modules of the dense ops: the gated MLP (SwiGLU, GeGLU)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GATES = {"silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu,
         "sigmoid": torch.sigmoid}


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): (..., D) -> (..., O), Hugging Face's LlamaMLP with its parameter names."""

    def __init__(self, dim: int, hidden: int, out: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, out, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(GATES[self.activation](self.gate_proj(x)) * self.up_proj(x))  # (..., O)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"
