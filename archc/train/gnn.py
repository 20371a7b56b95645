"""Whole-graph splits for the loop: node classification (one graph; node ids are the examples, every step runs
the whole graph and the loss reads the rows of the nodes taken) and graph classification (graph ids are the
examples; the graphs taken are collated into one disjoint union with a batch vector). Both are
archc.train.splits.Examples[Feeds]."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from archc.data.dataset import Split
from archc.data.gnn import GraphSet


@dataclass
class Feeds:
    """One step's model inputs by spec name and, for node tasks, the output rows the loss reads."""

    inputs: dict[str, torch.Tensor]
    rows: torch.Tensor | None = None

    def args(self, order: list[str]) -> list[torch.Tensor]:
        """The inputs in the module's argument order (the spec's input order)."""
        return [self.inputs[name] for name in order]


def _tensors(arrays: dict, roles: dict[str, str], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(arrays[role]).to(device) for role, name in roles.items()}


class NodeSplit:
    """The labelled nodes of one split of a single graph (held on the device once)."""

    def __init__(self, split: Split, graphs: GraphSet, roles: dict[str, str], device: torch.device) -> None:
        self.ids = torch.from_numpy(split.x).to(device)                 # (n,) node ids
        self.y = torch.from_numpy(split.y).to(device)                   # (n,) labels
        self.inputs = _tensors(graphs.whole(), roles, device)           # x [N, F], edge_index [2, E], ...
        self.device = device

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: torch.Tensor) -> tuple[Feeds, torch.Tensor]:
        """The whole graph's inputs, the rows of the nodes at `idx` and their labels (k,)."""
        idx = idx.to(self.device)
        return Feeds(self.inputs, self.ids[idx]), self.y[idx]


class GraphSplit:
    """The graphs of one split; a batch of them is collated on the host, then moved to the device."""

    def __init__(self, split: Split, graphs: GraphSet, roles: dict[str, str], device: torch.device) -> None:
        self.ids, self.graphs, self.roles, self.device = split.x, graphs, roles, device
        self.y = torch.from_numpy(split.y).to(device)                   # (g,) labels

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: torch.Tensor) -> tuple[Feeds, torch.Tensor]:
        """The graphs at `idx` collated into one disjoint union, and their labels (k,)."""
        arrays = self.graphs.collate(self.ids[idx.cpu().numpy()])      # x [n, F], edge_index [2, e], batch [n]
        return Feeds(_tensors(arrays, self.roles, self.device)), self.y[idx.to(self.device)]
