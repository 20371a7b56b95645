"""One split as the training loop reads it: `len(split)` examples and `split.take(idx) -> (x, y)` on the device.

Three kinds satisfy the protocol: DeviceSplit (below: the examples' arrays, for every batched task) and, for
whole-graph tasks, NodeSplit and GraphSplit (archc.train.gnn). The loop, the epoch order and evaluation use
only the protocol, so a new kind of split is one class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from archc.data.dataset import Split

ON_DEVICE_BYTES = 2**30  # a CUDA run copies a dataset this small to the GPU once instead of per batch
SPLITS = ("train", "val", "test")

X_co = TypeVar("X_co", covariant=True)


@runtime_checkable
class Examples(Protocol[X_co]):
    """A split of examples the loop batches: x is what the objective's forward reads, y the targets (n,) / (n, ..)."""

    device: torch.device

    def __len__(self) -> int:
        """Examples in the split (what the epoch order permutes)."""
        ...

    def take(self, idx: torch.Tensor) -> tuple[X_co, torch.Tensor]:
        """The examples at `idx` (k,) int64 as model input and targets (k, ...) on `device`."""
        ...


@dataclass
class DeviceSplit:
    """One split as tensors placed for the training device: x (n, ...), y (n, ...)."""

    x: torch.Tensor
    y: torch.Tensor
    device: torch.device

    @classmethod
    def of(cls, split: Split, device: torch.device) -> "DeviceSplit":
        """On CUDA a small split moves to the GPU once; a large one stays on the host, pinned, and moves per batch."""
        x, y = torch.from_numpy(np.ascontiguousarray(split.x)), torch.from_numpy(np.ascontiguousarray(split.y))
        if device.type == "cuda":
            if x.nbytes + y.nbytes <= ON_DEVICE_BYTES:
                x, y = x.to(device), y.to(device)
            else:
                x, y = x.pin_memory(), y.pin_memory()
        return cls(x, y, device)

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at `idx` on the training device (non-blocking copies from pinned memory)."""
        if self.x.device == self.device:
            idx = idx.to(self.device, non_blocking=True)
            return self.x[idx], self.y[idx]
        return (self.x[idx].pin_memory().to(self.device, non_blocking=True),
                self.y[idx].pin_memory().to(self.device, non_blocking=True))
