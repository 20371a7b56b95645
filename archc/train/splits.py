"""One split as the training loop reads it: `len(split)` examples and `split.take(idx) -> (x, y)` on the device.

Four kinds satisfy the protocol: DeviceSplit (below: the examples' arrays, for every batched task), LoaderSplit
(archc.train.loader: examples read per batch by loader workers) and, for whole-graph tasks, NodeSplit and
GraphSplit (archc.train.gnn). The loop, the epoch order and evaluation use only the protocol (and `batches`, which
a split may implement to read a whole plan of batches ahead), so a new kind of split is one class.

Between the split and the model a `Feed` runs on the device: the training batches' augmentation, then the
normalization (when it was not applied to the arrays up front).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol, TypeVar, runtime_checkable

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
class Feed:
    """What a batch goes through on the device before the model: `augment` (an archc.train.augment.Augmenter, on
    training batches only, keyed by the batch's seed) then `normalize` ({mean, std} of the training split, when the
    examples were not normalized up front)."""

    augment: Any = None
    normalize: dict | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, key: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        if key is not None and self.augment is not None:
            x, y = self.augment(x, y, key)
        if self.normalize is not None:
            x = normalize(x, self.normalize)
        return x, y


def normalize(x: torch.Tensor, stats: dict) -> torch.Tensor:
    """`(x - mean) / std` over axis 1 in float32: the arithmetic of archc.train.dataset.apply_preprocess."""
    out = []
    for k in ("mean", "std"):
        v = torch.tensor(stats[k], dtype=x.dtype, device=x.device)
        out.append(v.reshape((v.numel(),) + (1,) * (x.ndim - 2)) if v.numel() > 1 else v.reshape(()))
    return (x - out[0]) / out[1]


def ids(x: torch.Tensor) -> torch.Tensor:
    """Token ids stored narrower (a uint8 token file's windows) as the int64 an embedding takes; others as they are."""
    return x.long() if not x.is_floating_point() and x.dtype != torch.int64 and x.dtype != torch.bool else x


@dataclass
class DeviceSplit:
    """One split as tensors placed for the training device: x (n, ...), y (n, ...)."""

    x: torch.Tensor
    y: torch.Tensor
    device: torch.device
    feed: Feed | None = None

    @classmethod
    def of(cls, split: Split, device: torch.device, feed: Feed | None = None) -> "DeviceSplit":
        """On CUDA a small split moves to the GPU once; a large one stays on the host, pinned, and moves per batch."""
        x, y = as_tensor(split.x), as_tensor(split.y)
        if device.type == "cuda":
            if x.nbytes + y.nbytes <= ON_DEVICE_BYTES:
                x, y = x.to(device), y.to(device)
            else:
                x, y = x.pin_memory(), y.pin_memory()
        return cls(x, y, device, feed if feed is not None and (feed.augment or feed.normalize) else None)

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: torch.Tensor, key: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at `idx` on the training device (non-blocking copies from pinned memory), through the feed
        (augmented when `key` is given)."""
        if self.x.device == self.device:
            idx = idx.to(self.device, non_blocking=True)
            x, y = ids(self.x[idx]), ids(self.y[idx])
        else:
            x = ids(self.x[idx].pin_memory().to(self.device, non_blocking=True))
            y = ids(self.y[idx].pin_memory().to(self.device, non_blocking=True))
        return self.feed(x, y, key) if self.feed is not None else (x, y)

    def batches(self, plan: Iterable[torch.Tensor], keys: Iterable[int | None]) -> Iterator[tuple[Any, torch.Tensor]]:
        return (self.take(idx, key) for idx, key in zip(plan, keys))


def as_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor over `a` (a read-only memory map is shared, not copied; torch's warning about it is moot: nothing
    writes to it)."""
    import warnings

    a = np.ascontiguousarray(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def batches(split: Examples[Any], plan: list[torch.Tensor], keys: list[int | None] | None = None
            ) -> Iterator[tuple[Any, torch.Tensor]]:
    """The (x, y) of each index batch of `plan` in order (training batches with their augmentation `keys`): the
    split's own `batches` when it reads ahead, else one `take` each."""
    keys = keys if keys is not None else [None] * len(plan)
    own = getattr(split, "batches", None)
    if own is not None:
        return own(plan, keys)
    return (split.take(idx) for idx in plan)


def batch_key(seed: int, epoch: int, step: int, rank: int) -> int:
    """The augmentation seed of a training batch: a function of (seed, epoch, step, rank) only, so a resumed run
    augments its remaining batches as the uninterrupted run would."""
    return ((((seed * 1_000_003 + epoch) * 1_000_033) + step) * 1_009 + rank) % 2**63
