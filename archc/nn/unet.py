"""Torch modules of the U-Net / diffusion ops (timestep embedding, conditioning vectors on feature maps)."""
from __future__ import annotations

import math

import torch
from torch import nn


class TimestepEmbedding(nn.Module):
    """Sinusoidal timestep features (DDPM / ADM): (B,) or (B, 1) -> (B, dim), [cos | sin]."""

    def __init__(self, dim: int, max_period: float) -> None:
        super().__init__()
        self.dim, half = dim, dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)  # (dim // 2,)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.unsqueeze(1) if t.dim() == 1 else t                  # (B, 1) (unsqueeze keeps ONNX sizes known)
        args = t.to(self.freqs.dtype) * self.freqs                 # (B, dim // 2)
        parts = [args.cos(), args.sin()] + [torch.zeros_like(args[:, :1])] * (self.dim % 2)  # odd dim: a zero
        return torch.cat(parts, dim=-1)                            # (B, dim)


class AddChannels(nn.Module):
    """x + v on every position: (B, C, *S) and (B, C) -> (B, C, *S)."""

    def __init__(self, spatial: int) -> None:
        super().__init__()
        self.spatial = spatial

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x + v[(..., *[None] * self.spatial)]                # (B, C, 1, 1) broadcast


class ScaleShift(nn.Module):
    """x * (1 + scale) + shift: (B, C, *S) and (B, 2C) = [scale | shift] -> (B, C, *S)."""

    def __init__(self, channels: int, spatial: int) -> None:
        super().__init__()
        self.c, self.spatial = channels, spatial

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        v = v[(..., *[None] * self.spatial)]                       # (B, 2C, 1, 1)
        scale, shift = v[:, : self.c], v[:, self.c:]               # (B, C, 1, 1) each (fixed slices, not chunk:
        return x * (1 + scale) + shift                             # the exported sizes stay known)
