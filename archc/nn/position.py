"""Torch modules of the attention score biases: T5's bucketed relative positions, ALiBi, Swin's 2-d table.

Each returns a float (H, T, S) added to attention scores (attention's `bias_from`). The index tables (buckets,
Swin's relative_position_index) are computed once by archc.ops.position, the same arrays the ONNX emitter writes.
"""
from __future__ import annotations

import torch
from torch import nn


def _positions(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Key position minus query position: (T, S) int64, T = x's length (axis 1), S = y's."""
    q = torch.arange(x.shape[1], device=x.device)
    k = torch.arange(y.shape[1], device=x.device)
    return k[None, :] - q[:, None]  # (T, S)


class RelativePositionBias(nn.Module):
    """T5's bias: a learned (num_buckets, H) table read at the bucket of each key - query distance -> (H, T, S)."""

    def __init__(self, num_heads: int, num_buckets: int, bidirectional: bool, table: list[int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_buckets, num_heads) * 0.02)  # nn.Embedding's (rows, features)
        self.bidirectional, self.half = bidirectional, num_buckets // 2
        # bucket of a distance 0..len(table) - 1; longer distances share the last (as T5's min(..., buckets - 1))
        self.register_buffer("table", torch.tensor(table, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor, *memory: torch.Tensor) -> torch.Tensor:
        rel = _positions(x, memory[0] if memory else x)                           # (T, S)
        last = self.table.shape[0] - 1
        if self.bidirectional:  # keys after the query take the upper half of the buckets
            bucket = (rel > 0).long() * self.half + self.table[rel.abs().clamp(max=last)]
        else:                   # keys after the query (masked by causal attention) share bucket 0
            bucket = self.table[(-rel).clamp(min=0, max=last)]
        return self.weight[bucket].permute(2, 0, 1)                               # (H, T, S)


class Alibi(nn.Module):
    """ALiBi: slope_h * (key position - query position) -> (H, T, S); no parameters."""

    def __init__(self, slopes: list[float]) -> None:
        super().__init__()
        self.register_buffer("slopes", torch.tensor(slopes, dtype=torch.float32)[:, None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.slopes * _positions(x, x).to(self.slopes.dtype)[None]        # (H, 1, 1) * (1, T, T)


class RelativePositionBias2d(nn.Module):
    """Swin's bias: a learned ((2Wh-1)(2Ww-1), H) table read at relative_position_index -> (H, N, N), N = Wh*Ww."""

    def __init__(self, num_heads: int, rows: int, index: list[list[int]]) -> None:
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.randn(rows, num_heads) * 0.02)
        self.register_buffer("relative_position_index", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x has N positions (validate checks it); the index is read to x's length so that the graph reads x, as an
        # exported graph must (an input nothing reads is dropped from it)
        n = x.shape[1]
        index = self.relative_position_index[:n, :n]                               # (N, N)
        return self.relative_position_bias_table[index].permute(2, 0, 1)           # (H, N, N)
