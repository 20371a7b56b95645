"""Reproducible batches: the order of an epoch and each process's share of a global batch (no data, no task).

The order of an epoch is a permutation drawn from a generator seeded by (seed, epoch) alone, so it can be
recomputed on resume and the run continues mid-epoch at the stored step. Each global batch of `batch_size`
examples is shared out over the processes of a distributed run (rank r takes every world-th example), so
the batch size, and the learning-rate recipe with it, means the same for any --nproc. With [train] accumulate = K,
an optimizer step takes K consecutive batches of the epoch's order: the examples one batch of K x batch_size takes.
"""
from __future__ import annotations

import torch


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of range(n) for an epoch: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


def steps_per_epoch(n: int, batch_size: int, accumulate: int = 1) -> int:
    """Optimizer steps per epoch, each over `accumulate` batches ([train] accumulate); the last batch, and the last
    step's group of batches, may be short (no example is dropped)."""
    return -(-batches_per_epoch(n, batch_size) // accumulate)


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch; the last one may be short."""
    return -(-n // batch_size)


def local_batch(order: torch.Tensor, step: int, batch_size: int, rank: int = 0, world: int = 1
                ) -> tuple[torch.Tensor, int]:
    """This process's share of global batch `step` of the epoch, and the global batch's size."""
    batch = order[step * batch_size:(step + 1) * batch_size]
    return batch[rank::world], len(batch)
