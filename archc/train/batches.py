"""Training data: load and check it against the spec, normalize it, and cut it into reproducible batches.

The order of an epoch is a permutation drawn from a generator seeded by (seed, epoch) alone, so it can be
recomputed on resume and the run continues mid-epoch at the stored step. Each global batch of `batch_size`
examples is shared out over the processes of a distributed run (rank r takes every world-th example), so
the batch size, and the learning-rate recipe with it, means the same for any --nproc.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from archc.data import Dataset, Split, check_shape, load, normalization
from archc.errors import DataError
from archc.train.objectives import Objective
from archc.train.recipe import Setup

ON_DEVICE_BYTES = 2**30  # a CUDA run copies a dataset this small to the GPU once instead of per batch


def context_of(setup: Setup) -> int | None:
    """Tokens per window for text: sources: the size of a [seq] input's axis (fixed, or its [axes] entry)."""
    features = setup.graph.inputs[setup.input_name].features
    if len(features) != 1:
        return None
    (seq,) = features
    return seq if isinstance(seq, int) else setup.graph.sizes.get(seq)


def load_checked(setup: Setup, objective: Objective) -> Dataset:
    """Load the [data] source and check it against the spec's input and the task before training."""
    d = setup.spec.data
    assert d is not None
    dataset = load(d.source, task=objective.data_task, target=d.target, val_fraction=d.val_fraction,
                   test_fraction=d.test_fraction, seed=d.split_seed, root=setup.data_root,
                   defaults={"context": context_of(setup)})
    name = objective.data_input
    if name is not None:  # None: the objective feeds several inputs and checks them itself (graphs)
        expected = setup.graph.inputs[name]
        check_shape(dataset, expected.features, name)
        got = "int64" if dataset.train.x.dtype.kind in "iu" else "float32"
        if got != expected.dtype:
            raise DataError(f"expected {expected.dtype} examples (the spec's input '{name}'), received {got}",
                            where=f"data {dataset.name}")
    objective.check(dataset)
    if len(dataset.val) == 0:
        raise DataError("expected a validation split (it picks the best checkpoint), received none",
                        where=f"data {dataset.name}", hint="set [data] val_fraction > 0")
    return dataset


def preprocess_of(dataset: Dataset, input_name: str) -> dict[str, dict]:
    """{input: {mean, std}} from the training split: the ONNX `archc.preprocess` metadata."""
    stats = normalization(dataset.train)
    return {input_name: {"mean": stats["mean"], "std": stats["std"]}}


def apply_preprocess(x: np.ndarray, stats: dict) -> np.ndarray:
    """`(x - mean) / std` with list statistics over axis 1: the same float32 arithmetic as `archc infer`."""
    out = []
    for key in ("mean", "std"):
        v = np.asarray(stats[key], dtype=x.dtype)
        out.append(v.reshape((v.size,) + (1,) * (x.ndim - 2)) if v.size > 1 else v.reshape(()))
    mean, std = out
    return ((x - mean) / std).astype(x.dtype, copy=False)


def normalized(dataset: Dataset, stats: dict) -> Dataset:
    """The dataset with every split's features preprocessed."""
    def one(s: Split) -> Split:
        return Split(apply_preprocess(s.x, stats), s.y)
    return Dataset(dataset.name, one(dataset.train), one(dataset.val), one(dataset.test), dataset.classes,
                   dataset.example_shape, dataset.task)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of range(n) for an epoch: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=g)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch; the last one may be short (no example is dropped)."""
    return -(-n // batch_size)


def local_batch(order: torch.Tensor, step: int, batch_size: int, rank: int = 0, world: int = 1
                ) -> tuple[torch.Tensor, int]:
    """This process's share of global batch `step` of the epoch, and the global batch's size."""
    batch = order[step * batch_size:(step + 1) * batch_size]
    return batch[rank::world], len(batch)


@dataclass
class DeviceSplit:
    """One split as tensors placed for the training device."""

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
