"""Torch modules of the sequence ops: patchify, select, slice and pooling over a sequence axis."""
from __future__ import annotations

import torch
from torch import nn

# ---- pooling and slicing -------------------------------------------------------------------------
class Patchify(nn.Module):
    """Non-overlapping p x q patches: (B, C, H, W) -> (B, (H/p)(W/q), C*p*q), features ordered (c, i, j)."""

    def __init__(self, channels: int, height: int, width: int, patch: tuple[int, int]) -> None:
        super().__init__()
        self.c, (self.p, self.q) = channels, patch
        self.h, self.w = height // self.p, width // self.q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.c, self.h, self.p, self.w, self.q)  # (B, C, h, p, w, q)
        x = x.permute(0, 2, 4, 1, 3, 5)                             # (B, h, w, C, p, q)
        return x.reshape(-1, self.h * self.w, self.c * self.p * self.q)


class Select(nn.Module):
    """Pick one index along an axis, removing it."""

    def __init__(self, dim: int, index: int) -> None:
        super().__init__()
        self.dim, self.index = dim, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.select(self.dim, self.index)


class Slice(nn.Module):
    """x[start:end] along one axis (Python slice semantics; None = open end)."""

    def __init__(self, dim: int, start: int | None, end: int | None) -> None:
        super().__init__()
        self.dim, self.start, self.end = dim, start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[(slice(None),) * self.dim + (slice(self.start, self.end),)]


class MeanPool(nn.Module):
    """Mean over one axis."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dim)


class MaskedMean(nn.Module):
    """Mean over the positions whose token is not pad: (B, T, D), (B, T) -> (B, D)."""

    def __init__(self, pad_index: int) -> None:
        super().__init__()
        self.pad_index = pad_index

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        keep = (tokens != self.pad_index).to(x.dtype).unsqueeze(-1)     # (B, T, 1)
        count = keep.sum(dim=1).clamp(min=1.0)                          # (B, 1): all-pad rows divide by 1
        return (x * keep).sum(dim=1) / count                            # (B, D)
