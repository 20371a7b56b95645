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
