"""Torch modules of the normalization ops torch.nn lacks in the form archc needs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---- normalization -------------------------------------------------------------------------------
class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm written out (opset 18 has no RMSNormalization, and the exporter no aten::rms_norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # type: ignore[operator]
        return y * self.weight if self.weight is not None else y


class _OneValuePerChannel:
    """torch's BatchNorm, but a training batch with one value per channel (one example of [batch, C]: a last batch
    of one, or a process's share of one) normalizes with the running statistics, as in eval, and leaves them as
    they are: torch refuses it ("Expected more than 1 value per channel"), which ended a run mid-epoch. Validate
    refuses batch_size = 1 itself (every step would be such a batch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() <= x.shape[1]:  # type: ignore[attr-defined]
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,  # type: ignore[attr-defined]
                                self.bias, False, 0.0, self.eps)  # type: ignore[attr-defined]
        return super().forward(x)  # type: ignore[misc]


class BatchNorm1d(_OneValuePerChannel, nn.BatchNorm1d):
    """nn.BatchNorm1d that trains on a batch of one [1, C] (see _OneValuePerChannel)."""


class BatchNorm2d(_OneValuePerChannel, nn.BatchNorm2d):
    """nn.BatchNorm2d that trains on a batch of one [1, C, 1, 1]."""


class BatchNorm3d(_OneValuePerChannel, nn.BatchNorm3d):
    """nn.BatchNorm3d that trains on a batch of one [1, C, 1, 1, 1]."""
