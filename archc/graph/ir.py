"""The graph IR: a flat, topologically ordered list of nodes, each an op instance wired by ids."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from archc.ops.base import Op, TensorType

if TYPE_CHECKING:
    from archc.data.columns import Column
    from archc.graph.memory import Memory


@dataclass
class Node:
    """One op application. `id` is dotted inside blocks ('stage1.0.conv1'); `where` is its spec location."""

    id: str
    op: Op
    inputs: list[str]
    where: str
    act: Op | None = None
    tied: str | None = None  # id of the node whose parameters this one reuses (weight tying)
    notes: tuple[str, ...] = ()  # what a `from` naming a left-out layer (`when` false) reads instead, for errors
    # filled by the infer pass
    out: TensorType | None = None
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    num_params: int = 0
    flops: int = 0

    def label(self) -> str:
        return self.where


@dataclass(frozen=True)
class Limit:
    """A bound one node puts on a symbolic axis' size (low..high) or on an int64 input's values ([0, high))."""

    node: str                      # the id of the node that imposes it
    where: str                     # its spec location: errors point there
    why: str                       # what in the op sets it: "max_len = 16, the position table's rows"
    low: int = 1
    high: int | str | None = None  # None: no upper bound; a str: the size of that axis (values only)
    axis: str = ""                 # axis limits: the name as the node sees it ('seq', or derived 'seq-1')
    hint: str = ""

    def allows(self, size: int) -> bool:
        return self.low <= size and (not isinstance(self.high, int) or size <= self.high)


@dataclass
class Graph:
    """The expanded model: named inputs, nodes in order, output ids."""

    name: str
    inputs: dict[str, TensorType]
    nodes: list[Node]
    outputs: list[str]
    sizes: dict[str, int] = field(default_factory=dict)  # typical sizes of symbolic axes
    vocab: dict[str, int | str] = field(default_factory=dict)  # int64 inputs: values in [0, vocab or axis size)
    columns: dict[str, tuple["Column", ...]] = field(default_factory=dict)  # tabular inputs' declared columns
    # filled by the infer pass (archc/graph/bounds.py): what the nodes index, per symbol and per int64 input
    axis_limits: dict[str, list[Limit]] = field(default_factory=dict)   # base symbol ('seq') -> limits
    value_limits: dict[str, list[Limit]] = field(default_factory=dict)  # input name -> limits on its values
    memory: "Memory | None" = None  # filled by the infer pass from the spec's recipe (archc/graph/memory.py)
    warnings: list = field(default_factory=list)  # SpecErrors validate prints as warnings (expand's: wiring)
    # id -> node, so lookups inside per-node loops stay O(1) (a scan made lowering quadratic in the node count)
    _by_id: dict[str, Node] = field(init=False, repr=False, compare=False, default_factory=dict)
    # base symbol -> (its limits list, its length, what they allow): bounds.fits runs once per candidate size, and a
    # walk over every limit each time was quadratic in the slices of one axis (3,000 slices: 17 s)
    _fits: dict[str, tuple] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._by_id = {n.id: n for n in self.nodes}

    def _index(self) -> dict[str, Node]:
        """The id index, rebuilt if `nodes` was changed in place since (a cheap length check)."""
        if len(self._by_id) != len(self.nodes):
            self._by_id = {n.id: n for n in self.nodes}
        return self._by_id

    def node(self, id: str) -> Node:
        """The node with this id (KeyError if there is none)."""
        return self._index()[id]

    def get(self, id: str) -> Node | None:
        """The node with this id, or None (an input's name, or an unknown id)."""
        return self._index().get(id)

    def score_kind(self, name: str) -> str:
        """'probs' / 'log_probs' when node `name` ends in an op that normalizes scores, else 'logits'."""
        node = self.get(name)
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
