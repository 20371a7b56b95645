"""The graph IR: a flat, topologically ordered list of nodes, each an op instance wired by ids."""
from __future__ import annotations

from dataclasses import dataclass, field

from archc.ops.base import Op, TensorType


@dataclass
class Node:
    """One op application. `id` is dotted inside blocks ('stage1.0.conv1'); `where` is its spec location."""

    id: str
    op: Op
    inputs: list[str]
    where: str
    act: Op | None = None
    tied: str | None = None  # id of the node whose parameters this one reuses (weight tying)
    # filled by the infer pass
    out: TensorType | None = None
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    num_params: int = 0
    flops: int = 0

    def label(self) -> str:
        return self.where


@dataclass
class Graph:
    """The expanded model: named inputs, nodes in order, output ids."""

    name: str
    inputs: dict[str, TensorType]
    nodes: list[Node]
    outputs: list[str]
    sizes: dict[str, int] = field(default_factory=dict)  # typical sizes of symbolic axes
    vocab: dict[str, int | str] = field(default_factory=dict)  # int64 inputs: values in [0, vocab or axis size)

    def node(self, id: str) -> Node:
        return next(n for n in self.nodes if n.id == id)

    def score_kind(self, name: str) -> str:
        """'probs' / 'log_probs' when node `name` ends in an op that normalizes scores, else 'logits'."""
        node = next((n for n in self.nodes if n.id == name), None)
        last = (node.act or node.op) if node is not None else None
        return (last.score_kind if last is not None else None) or "logits"

    def type_of(self, name: str) -> TensorType:
        """The type of an input or a node's output (after inference)."""
        if name in self.inputs:
            return self.inputs[name]
        out = self.node(name).out
        assert out is not None, f"{name} not inferred"
        return out

    @property
    def total_params(self) -> int:
        return sum(n.num_params for n in self.nodes)

    @property
    def total_flops(self) -> int:
        return sum(n.flops for n in self.nodes)
