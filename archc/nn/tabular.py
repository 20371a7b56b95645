"""Torch module of the tabular front op (archc/ops/tabular.py)."""
from __future__ import annotations

import torch
from torch import nn


class ColumnEmbed(nn.Module):
    """Per column of the encoded row: an embedding lookup of its index value, or its values as they are.
    (N, sum(widths)) -> (N, features)."""

    def __init__(self, widths: list[int], rows: list[int], dims: list[int]) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(r, d) for r, d in zip(rows, dims) if r)
        # (start, stop, table or -1) per column; consecutive pass-through columns make one slice
        self.parts: list[tuple[int, int, int]] = []
        at, j = 0, 0
        for w, r in zip(widths, rows):
            if r:
                self.parts.append((at, at + 1, j))
                j += 1
                if w > 1:
                    self.parts.append((at + 1, at + w, -1))
            elif self.parts and self.parts[-1][2] < 0 and self.parts[-1][1] == at:
                self.parts[-1] = (self.parts[-1][0], at + w, -1)
            else:
                self.parts.append((at, at + w, -1))
            at += w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for start, stop, j in self.parts:
            if j < 0:
                out.append(x[:, start:stop])  # (N, w)
                continue
            table: nn.Embedding = self.tables[j]  # type: ignore[assignment]
            unknown = table.num_embeddings - 1
            v = x[:, start].round()  # (N,)
            # an index outside [0, rows) (or NaN) reads the unknown row: no out-of-range gather in torch or ONNX
            v = torch.where((v >= 0) & (v <= unknown), v, torch.full_like(v, unknown))
            out.append(table(v.long()))  # (N, dim)
        return torch.cat(out, dim=1)  # (N, features)
