"""Torch modules of the conv ops: global average pooling and explicit "same" padding."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalAvgPool(nn.Module):
    """Mean over every axis after the channel axis: (B, C, ...) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(2, x.dim())))


class _PadThenConv:
    """Asymmetric zero padding before a convolution ("same" with an odd total padding)."""

    def __init__(self, *args, pads: list[int], **kwargs) -> None:
        super().__init__(*args, padding=0, **kwargs)  # type: ignore[call-arg]
        self.pads = list(pads)  # F.pad order: last axis first, (before, after) per axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))  # type: ignore[misc]


class Conv1dSame(_PadThenConv, nn.Conv1d):
    """Conv1d with explicit "same" padding."""


class Conv2dSame(_PadThenConv, nn.Conv2d):
    """Conv2d with explicit "same" padding."""


ConvSame = {1: Conv1dSame, 2: Conv2dSame}


class AdaptivePool(nn.Module):
    """torch's adaptive avg/max pooling for fixed input sizes, one spatial axis at a time (B, C, *S) -> (B, C, *S').

    Output cell i of an axis of length L pools [floor(i L / O), ceil((i + 1) L / O)), torch's windows. A
    window over several axes is a product of per-axis windows, so pooling axis by axis gives torch's values.
    Written out because the TorchScript exporter refuses adaptive pooling whose sizes do not divide."""

    def __init__(self, kind: str, sizes: list[tuple[int, int] | None]) -> None:
        super().__init__()
        self.kind, self.sizes = kind, sizes

    def _reduce(self, x: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
        return x.amax(dim=dim, keepdim=keepdim) if self.kind == "max" else x.mean(dim=dim, keepdim=keepdim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, size in enumerate(self.sizes, start=2):
            if size is None or size[0] == size[1]:
                continue
            n, o = size
            if o == 1:  # one window over the whole axis (a classifier head): one reduction, no reshape
                x = self._reduce(x, axis, keepdim=True)
                continue
            if n % o == 0:  # equal windows side by side: one reshape and one reduction
                x = self._reduce(x.unflatten(axis, (o, n // o)), axis + 1)
                continue
            cells = [self._reduce(x.narrow(axis, (i * n) // o, -((-(i + 1) * n) // o) - (i * n) // o), axis)
                     for i in range(o)]
            x = torch.stack(cells, dim=axis)
        return x

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, sizes={self.sizes}"
