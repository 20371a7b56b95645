"""The restoring affine of standardized targets: a model trained on (y - mean) / std is exported with
`output * std + mean` as its last step, so the ONNX file speaks the targets' units to any client and the export's
parity check covers the affine too.

The statistics come from the task (archc.tasks.base.Task.standardize) and travel as the `target_scale` entry of the
run's export metadata (the run folder's export.json, and `archc.target_scale` in the ONNX): export() adds the affine
whenever that entry is there, so the run's own export, `archc export RUN_DIR` and a resumed run give the same file.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from archc.errors import ExportError
from archc.graph.ir import Graph

KEY = "target_scale"  # {output name: {"mean": values, "std": values}}, each shaped like one example's output
NAME = "target_scale"  # the affine's module (and its buffers' prefix: target_scale.mean, target_scale.std)


class Restore(nn.Module):
    """y = x * std + mean, broadcast over the batch: x (B, *features) in standardized units."""

    def __init__(self, mean: Any, std: Any) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean  # (B, *features)


def restored(module: nn.Module, graph: Graph, metadata: dict[str, Any] | None) -> nn.Module:
    """`module` (archc's GraphModule) with the outputs named in metadata's `target_scale` restored to the targets'
    units; `module` itself when there is none. The same submodules and weights (names unchanged) plus the affine's
    buffers; `module` is left as it is."""
    scales = (metadata or {}).get(KEY)
    if not scales:
        return module
    assert isinstance(module, fx.GraphModule), "the restoring affine is added to archc's lowered module"
    names = list(graph.outputs)
    g = fx.Graph()
    out = g.graph_copy(module.graph, {})
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    owned: dict[str, Any] = {}
    for node in g.nodes:
        if node.op == "call_module":
            owned[node.target] = module.get_submodule(node.target)
        elif node.op == "get_attr":
            owned[node.target] = _attr(module, node.target)
    for name, stats in scales.items():
        if name not in names:  # export.json is the run's own, but a file can be edited
            raise ExportError(f"expected {KEY} for outputs of the model ({', '.join(names)}), received '{name}'",
                              where=KEY)
        i = names.index(name)
        target = NAME if len(scales) == 1 else f"{NAME}.{name}"
        owned[target] = Restore(stats["mean"], stats["std"])
        outs[i] = g.call_module(target, (outs[i],))
    g.output(outs[0] if len(outs) == 1 and not isinstance(out, (tuple, list)) else tuple(outs))
    new = fx.GraphModule(owned, g)
    new.train(module.training)
    return new


def _attr(module: nn.Module, target: str) -> Any:
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
