"""Torch modules of the recurrent ops (RNN, LSTM, GRU) with archc's output selection."""
from __future__ import annotations

import torch
from torch import nn

# ---- recurrent -----------------------------------------------------------------------------------
class _Recurrent:
    """Mixin over nn.RNN/LSTM/GRU (batch_first) choosing the output: the sequence, the last state, or all."""

    def __init__(self, *args, output: str, **kwargs) -> None:
        super().__init__(*args, batch_first=True, **kwargs)  # type: ignore[call-arg]
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, h = super().forward(x)  # type: ignore[misc]  # y (B, T, dirs*H), h (layers*dirs, B, H)
        if self.output == "sequence":
            return y
        if isinstance(h, tuple):   # LSTM: (h_n, c_n)
            h = h[0]
        if self.output == "last":  # the top layer: forward's last step and backward's final state
            h = h[-(2 if self.bidirectional else 1):]  # type: ignore[attr-defined]
        return h.transpose(0, 1).flatten(1)  # (B, n*H)


class RNN(_Recurrent, nn.RNN):
    """Elman RNN choosing its output."""


class LSTM(_Recurrent, nn.LSTM):
    """LSTM choosing its output."""


class GRU(_Recurrent, nn.GRU):
    """GRU choosing its output."""
