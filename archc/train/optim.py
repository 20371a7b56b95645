"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules with warmup, stepped once per optimizer step.

A schedule is a pure function of the global step (`lr_factor`), wrapped in a LambdaLR: resuming only needs
the step count, so a resumed run follows the same learning rates as an uninterrupted one.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from archc.errors import SpecError
from archc.language.model import Optimizer, Schedule, Train

ONECYCLE_PCT = 0.3        # one-cycle's warmup share when warmup_epochs is 0 (torch's OneCycleLR pct_start)
ONECYCLE_DIV = 25.0       # one-cycle starts at lr / 25 ...
ONECYCLE_FINAL_DIV = 1e4  # ... and ends at lr / 25 / 1e4 (torch's div_factor, final_div_factor)


def schedule_of(train: Train) -> Schedule:
    """[train].schedule as a table (a bare name means no warmup and the defaults)."""
    s = train.schedule
    return Schedule(name=s) if isinstance(s, str) else s


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices and kernels only: biases and norm scales are not shrunk (a common choice
    that keeps normalization layers free to scale, as in nanoGPT's configure_optimizers)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, opt: Optimizer, fused: bool = False) -> torch.optim.Optimizer:
    """The [train].optimizer table as a torch optimizer; `fused`: one fused kernel for all updates (same update rule,
    devices.fused_optimizer says where it is faster)."""
    groups = param_groups(model, opt.weight_decay)
    kw = {"fused": True} if fused else {}
    if opt.name == "sgd":
        if opt.nesterov and opt.momentum == 0:
            raise SpecError("expected momentum > 0 with nesterov = true, received momentum 0",
                            where="train.optimizer.nesterov")
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov, **kw)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=opt.lr, betas=tuple(opt.betas), **kw)


def warmup_steps(s: Schedule, total: int, steps_per_epoch: int) -> int:
    """Steps of linear warmup (one-cycle without warmup_epochs ramps up over its first 30%)."""
    if s.name == "onecycle" and s.warmup_epochs == 0:
        return min(total, max(1, round(ONECYCLE_PCT * total)))
    return min(total, round(s.warmup_epochs * steps_per_epoch))


def lr_factor(s: Schedule, step: int, total: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based) of `total`."""
    warm = warmup_steps(s, total, steps_per_epoch)
    if step < warm:
        if s.name == "onecycle":  # from lr / 25 up to lr
            start = 1.0 / ONECYCLE_DIV
            return start + (1.0 - start) * step / warm
        return (step + 1) / warm  # linear from lr / warm: the first step already moves
    t = (step - warm) / max(1, total - warm)  # progress after warmup, in [0, 1)
    if s.name == "constant":
        return 1.0
    if s.name == "step":  # multiply by gamma every step_size epochs, counted from the start
        return s.gamma ** ((step // max(1, steps_per_epoch)) // s.step_size)
    cosine = 0.5 * (1.0 + math.cos(math.pi * t))
    if s.name == "cosine":
        return cosine
    floor = 1.0 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
    return floor + (1.0 - floor) * cosine


def build_scheduler(optimizer: torch.optim.Optimizer, train: Train, steps_per_epoch: int,
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following `lr_factor` over epochs * steps_per_epoch steps."""
    s, total = schedule_of(train), train.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(s, step, total, steps_per_epoch))
