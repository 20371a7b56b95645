"""DDPM noise schedules and the forward (noising) process, in torch.

The schedule is computed once in float64 and stored in the exported model's metadata as explicit betas, so the
sampler (archc.runtime.sample, numpy + ONNX Runtime) needs no formula of its own and cannot drift from training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("linear", "cosine")
COSINE_OFFSET = 0.008   # Nichol & Dhariwal's s: keeps beta_0 from vanishing
MAX_BETA = 0.999        # the cosine schedule's clip near t = T (where alpha_bar -> 0)


def betas(kind: str, steps: int) -> torch.Tensor:
    """beta_t for t = 0..T-1 (float64, (T,)): 'linear' or 'cosine'."""
    if kind == "linear":
        # Ho et al.'s 1e-4 .. 0.02 at T = 1000, scaled by 1000 / T so shorter chains noise as far
        scale = 1000.0 / steps
        return torch.linspace(scale * 1e-4, min(scale * 0.02, MAX_BETA), steps, dtype=torch.float64)
    if kind == "cosine":
        s = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((s + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2     # (T + 1,)
        alpha_bar = f / f[0]
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)
    raise ValueError(f"unknown beta schedule {kind!r}: expected one of {', '.join(SCHEDULES)}")


@dataclass
class Schedule:
    """The forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) of T steps."""

    kind: str
    steps: int
    betas: torch.Tensor        # (T,) float64
    alpha_bar: torch.Tensor    # (T,) float64, cumulative product of 1 - beta, decreasing

    @classmethod
    def of(cls, kind: str, steps: int) -> "Schedule":
        b = betas(kind, steps)
        return cls(kind, steps, b, torch.cumprod(1 - b, dim=0))

    def noised(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps: x0, eps (B, ...), t (B,) int64."""
        ab = self.alpha_bar.to(x0.device)[t].to(x0.dtype)                     # (B,)
        ab = ab.view(-1, *[1] * (x0.dim() - 1))                                # (B, 1, ..)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def metadata(self) -> dict:
        """What the sampler needs to run the reverse process: T, the kind and every beta."""
        return {"steps": self.steps, "schedule": self.kind, "betas": [float(b) for b in self.betas]}
