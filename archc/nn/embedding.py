"""Torch modules of the embedding ops: learned and sinusoidal positions, tied output projection."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ---- positions -----------------------------------------------------------------------------------
class PosEmbedding(nn.Module):
    """Add a learned table sliced to the current length: (B, T, D) -> (B, T, D), T <= max_len."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.shape[1]]  # (B, T, D) + (T, D)


def rope_angles(length: int | torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Position x frequency angles: (T, F) for positions 0..T-1 (T may be a traced size)."""
    pos = torch.arange(length, device=inv_freq.device).to(inv_freq.dtype)
    return pos[:, None] * inv_freq[None, :]  # (T, F)


def inverse_frequencies(dim: int, base: float) -> torch.Tensor:
    return torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))  # (ceil(dim/2),)


class SinusoidalPos(nn.Module):
    """Add the fixed sin/cos table of 'Attention is all you need' (even features sin, odd cos)."""

    def __init__(self, dim: int, base: float) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("inv_freq", inverse_frequencies(dim, base), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = rope_angles(x.shape[1], self.inv_freq)                              # (T, ceil(D/2))
        pe = torch.stack((a.sin(), a.cos()), dim=-1).flatten(1)[:, : self.dim]  # (T, D): sin, cos interleaved
        return x + pe.to(x.dtype)


# ---- weight tying --------------------------------------------------------------------------------
class TiedEmbedding(nn.Module):
    """Look up ids in another module's table: (...) int64 -> (..., D).

    The tied module is kept in a plain list, not registered: its parameters stay counted (and saved) once.
    """

    def __init__(self, tied: nn.Module) -> None:
        super().__init__()
        self._tied = [tied]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        table = self._tied[0]
        return F.embedding(ids, table.weight, getattr(table, "padding_idx", None))


class TiedLinear(nn.Module):
    """x @ E^T (+ bias) with E another module's weight: (..., D) -> (..., V).

    The tied module is kept in a plain list, not registered: its parameters stay counted (and saved) once.
    """

    def __init__(self, tied: nn.Module, bias: bool) -> None:
        super().__init__()
        self._tied = [tied]
        vocab, dim = tied.weight.shape
        # A tied table is also the output projection: nn.Embedding's N(0, 1) rows would give logits of size
        # ~dim at the start (initial loss ~10x ln(vocab)); N(0, 1/dim), a linear layer's scale, gives O(1).
        with torch.no_grad():
            tied.weight.mul_(dim ** -0.5)
        self.bias = nn.Parameter(torch.zeros(vocab)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self._tied[0].weight                                       # (V, D)
        # 2-D F.linear with a bias exports as Gemm(transB=1); any other form exports as MatMul of the
        # transposed weight, which constant folding would store as a second copy of the table in the file
        bias = self.bias if self.bias is not None else weight.new_zeros(weight.shape[0])
        y = F.linear(x.reshape(-1, x.shape[-1]), weight, bias)              # (N, V)
        return y.reshape(*x.shape[:-1], weight.shape[0])                    # (..., V)
