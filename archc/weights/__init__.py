"""Pretrained weights in: a safetensors checkpoint, in the naming of the library that made it, loaded into the
spec's model through a declared mapping (archc.weights.mapping). `archc build --weights` and `archc train --init`.

The model's names are its state_dict's, as in archc's own checkpoints: the node id, then the parameter
(`blocks.0.attn.q_proj.weight`). Without a mapping the file must be in that naming.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archc.weights.checkpoint import Checkpoint
from archc.weights.file import TensorInfo, check_finite, read_header
from archc.weights.mapping import Mapping, load as load_mapping
from archc.weights.plan import Expected, Step, plan

__all__ = ["Init", "Loaded", "load_into", "read_header", "check_finite", "load_mapping", "Mapping", "Checkpoint"]


@dataclass(frozen=True)
class Loaded:
    """What a load did, for the command's summary line."""

    tensors: int        # model tensors filled
    read: int           # file tensors read
    dropped: int        # file tensors a `drop` name of the mapping matches (the plan leaves no other unread)
    seconds: float

    def line(self, path: Path, map_path: Path | None) -> str:
        through = f" through {map_path}" if map_path else ""
        dropped = f", {self.dropped} dropped" if self.dropped else ""
        return (f"loaded {self.tensors} tensors from {path}{through} ({self.read} read{dropped}, "
                f"{self.seconds:.2f} s)")


@dataclass(frozen=True)
class Init:
    """A checkpoint and its mapping, read and checked (torch-free) before a model exists to load it into."""

    path: Path
    map_path: Path | None
    mapping: Mapping
    checkpoint: Checkpoint          # one file or an index's shards

    @property
    def infos(self) -> dict[str, TensorInfo]:
        return self.checkpoint.infos

    @classmethod
    def open(cls, path: str | Path, map_path: str | Path | None = None) -> "Init":
        """Read the mapping and the checkpoint's headers (a file, or a sharded index's shards), and check every tensor
        the mapping reads for nan and inf (torch-free: before a model is compiled, data read or a run folder
        claimed)."""
        mapping = load_mapping(map_path) if map_path is not None else Mapping.identity()
        checkpoint = Checkpoint.open(path)
        checkpoint.check_finite([name for name in checkpoint.infos if mapping.reads(name)])
        return cls(Path(path), Path(map_path) if map_path is not None else None, mapping, checkpoint)

    def describe(self) -> dict[str, str | None]:
        """What the ONNX metadata records as archc.weights: the checkpoint's and the mapping's file names."""
        return {"file": self.path.name, "map": self.map_path.name if self.map_path else None}

    def load(self, model: Any) -> Loaded:
        """Fill every tensor of `model` (a torch module) from the file, or raise one ModelError listing every
        missing, extra and mis-shaped tensor before any data is read."""
        import torch

        start = time.perf_counter()
        own = model.state_dict()  # detached views of the parameters and buffers: copy_ fills the model
        expected = {k: Expected(tuple(v.shape), v.is_floating_point()) for k, v in own.items()}
        steps = plan(self.mapping, self.infos, expected, str(self.path))
        with self.checkpoint.reader() as reader, torch.no_grad():
            for step in steps:
                for target, tensor in zip(step.targets, combine(step, [reader.get(s) for s in step.sources])):
                    own[target].copy_(tensor)  # casts (a bf16 file into float32 weights) and moves to the device
        read = sum(len(s.sources) for s in steps)
        dropped = sum(map(self.mapping.drops, self.infos))
        assert read + dropped == len(self.infos), "the plan reads or drops every file tensor, or raises"
        return Loaded(len(expected), read, dropped, time.perf_counter() - start)


def combine(step: Step, tensors: list[Any]) -> list[Any]:
    """Apply a step's rule to the file's tensors: transpose, then split or concatenate (shapes already checked)."""
    import torch

    rule = step.rule
    if rule is None:
        return tensors
    if rule.transpose:
        tensors = [t.t() for t in tensors]
    if rule.kind == "concat":
        return [torch.cat(tensors, dim=rule.axis)]
    if rule.kind == "split":
        return list(tensors[0].chunk(len(step.targets), dim=rule.axis))
    return tensors


def load_into(model: Any, path: str | Path, map_path: str | Path | None = None) -> Loaded:
    """Load a safetensors checkpoint into `model` through the mapping file `map_path` (None: own naming)."""
    return Init.open(path, map_path).load(model)
