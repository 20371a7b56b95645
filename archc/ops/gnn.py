"""Graph ops: message passing over edge_index and pooling over nodes, on unbatched (whole-graph) inputs.

Node features are x [nodes, F] (inputs declared with `batched = false`), edges an int64 edge_index
[2, edges] with row 0 the source and row 1 the target of each message. Outputs keep the nodes axis.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archc.ops.base import (ID_PATTERN, Dim, Example, Op, PosInt, TensorType, ValueBound, concrete, expect,
                            expect_float, register)

UNBATCHED = "declare graph inputs with batched = false: the nodes axis replaces the batch axis"


def node_features(x: TensorType) -> int:
    """Check node features [nodes, F] (float32, no batch axis) and return F."""
    expect_float(x, "node features")
    expect(x.rank == 2 and not x.batched, "node features [nodes, features] without a batch axis", x.show(),
           hint=UNBATCHED)
    return concrete(x.shape[1], "feature axis")


def edges(x: TensorType, edge_index: TensorType) -> Dim:
    """Check edge_index int64 [2, edges] and return the edges axis."""
    expect(edge_index.dtype == "int64" and edge_index.rank == 2 and edge_index.shape[0] == 2,
           "an int64 edge_index [2, edges] as the second input (row 0 source, row 1 target)",
           f"{edge_index.dtype} {edge_index.show()}", hint="declare it with vocab = the nodes axis' name")
    return edge_index.shape[1]


def _size(d: Dim, sizes: dict[str, int]) -> int:
    return d if isinstance(d, int) else sizes.get(d, 1)


_GRAPH = dict(dtype=("float32", "int64"), vocab="nodes", batched=False)


class _MessagePassing(Op):
    """Shared wiring of the graph convolutions: inputs (x [nodes, F], edge_index [2, edges])."""

    out_features: PosInt = Field(description="output features per node")
    bias: bool = Field(True, description="learn an additive bias")

    family = "graph"
    arity = (2, 2)
    examples = (Example({"out_features": 8}, (("nodes", 5), (2, "edges")), sizes={"nodes": 7, "edges": 20},
                        **_GRAPH),)
    # FLOPs per edge per output feature of the aggregation (a multiply and an add = 2)
    edge_cost: ClassVar[int] = 2

    def width(self) -> int:
        return self.out_features

    def infer(self, ins):
        x, edge_index = ins
        node_features(x)
        edges(x, edge_index)
        return x.with_shape((x.shape[0], self.width()))

    def bounds(self, ins):
        nodes = ins[0].shape[0]
        return (ValueBound(1, nodes, f"edge_index holds node indices into the nodes axis ({nodes}) of the features",
                           hint=f"declare edge_index with vocab = {nodes!r}" if isinstance(nodes, str) else
                                f"declare edge_index with vocab <= {nodes}"),)

    def flops(self, ins, out, sizes):
        x, edge_index = ins
        n, e = _size(x.shape[0], sizes), _size(edge_index.shape[1], sizes)
        return 2 * n * x.shape[1] * out.shape[1] + self.edge_cost * e * out.shape[1] + out.numel(sizes)


@register
class GCNConv(_MessagePassing):
    """Graph convolution D^-1/2 (A + I) D^-1/2 X W + b: [nodes, F] and edge_index [2, edges] -> [nodes, out]."""

    op: Literal["gcn_conv"] = "gcn_conv"
    add_self_loops: bool = Field(True, description="add an edge from every node to itself (A + I)")
    normalize: bool = Field(True, description="symmetric degree normalization (else a plain sum)")

    examples = (*_MessagePassing.examples,
                Example({"out_features": 3, "normalize": False, "add_self_loops": False, "bias": False},
                        (("nodes", 4), (2, "edges")), sizes={"nodes": 5, "edges": 9}, **_GRAPH))

    def param_shapes(self, ins):
        shapes = {"weight": (self.out_features, ins[0].shape[1])}
        return shapes | ({"bias": (self.out_features,)} if self.bias else {})

    def to_torch(self, ins):
        from archc.nn.gnn import GCNConv as M
        return M(ins[0].shape[1], self.out_features, self.bias, self.add_self_loops, self.normalize)


@register
class SAGEConv(_MessagePassing):
    """GraphSAGE: lin_self(x_i) + lin_neigh(aggregate of neighbours x_j): [nodes, F], [2, edges] -> [nodes, out]."""

    op: Literal["sage_conv"] = "sage_conv"
    aggr: Literal["mean", "sum", "max"] = Field("mean", description="how neighbour features are combined")

    examples = (*_MessagePassing.examples,
                Example({"out_features": 4, "aggr": "max"}, (("nodes", 3), (2, "edges")),
                        sizes={"nodes": 6, "edges": 12}, **_GRAPH),
                Example({"out_features": 4, "aggr": "sum", "bias": False}, ((5, 3), (2, "edges")),
                        sizes={"edges": 8}, dtype=("float32", "int64"), vocab=5, batched=False))
    edge_cost = 1

    def param_shapes(self, ins):
        f = ins[0].shape[1]
        shapes = {"lin_neigh.weight": (self.out_features, f)}
        shapes |= {"lin_neigh.bias": (self.out_features,)} if self.bias else {}
        return shapes | {"lin_self.weight": (self.out_features, f)}

    def flops(self, ins, out, sizes):
        x, edge_index = ins
        e = _size(edge_index.shape[1], sizes)
        return 4 * x.numel(sizes) * self.out_features + e * x.shape[1] + out.numel(sizes)

    def to_torch(self, ins):
        from archc.nn.gnn import SAGEConv as M
        return M(ins[0].shape[1], self.out_features, self.bias, self.aggr)


@register
class GATConv(_MessagePassing):
    """Graph attention: [nodes, F], [2, edges] -> [nodes, heads * out] (concat) or [nodes, out] (mean of heads).

    Per head, a softmax over each node's incoming edges of leaky_relu(a_src . W x_j + a_dst . W x_i) weights
    the neighbours' features W x_j.
    """

    op: Literal["gat_conv"] = "gat_conv"
    out_features: PosInt = Field(description="output features per node and head")
    heads: PosInt = Field(1, description="attention heads")
    concat: bool = Field(True, description="concatenate the heads' outputs (else average them)")
    negative_slope: float = Field(0.2, ge=0, description="leaky_relu slope of the attention scores")
    add_self_loops: bool = Field(True, description="let every node attend to itself")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on attention coefficients while training")

    examples = (*_MessagePassing.examples,
                Example({"out_features": 3, "heads": 2}, (("nodes", 4), (2, "edges")),
                        sizes={"nodes": 6, "edges": 15}, **_GRAPH),
                Example({"out_features": 3, "heads": 3, "concat": False, "add_self_loops": False},
                        (("nodes", 4), (2, "edges")), sizes={"nodes": 5, "edges": 30}, **_GRAPH))
    edge_cost = 4  # scores, exp, normalization, weighted sum

    def width(self) -> int:
        return self.heads * self.out_features if self.concat else self.out_features

    def param_shapes(self, ins):
        h, c = self.heads, self.out_features
        shapes = {"weight": (h * c, ins[0].shape[1]), "att_src": (h, c), "att_dst": (h, c)}
        return shapes | ({"bias": (self.width(),)} if self.bias else {})

    def to_torch(self, ins):
        from archc.nn.gnn import GATConv as M
        return M(ins[0].shape[1], self.out_features, self.heads, self.concat, self.negative_slope,
                 self.add_self_loops, self.dropout, self.bias)


class _GlobalPool(Op):
    """Shared rule of global pooling: x [nodes, F] (and graph ids [nodes]) -> [graphs, F], or [1, F]."""

    graphs_axis: str = Field("graphs", pattern=ID_PATTERN,
                             description="name of the output's graphs axis (the batch vector's vocab)")

    family = "graph"
    arity = (1, 2)
    reduce: ClassVar[str] = "mean"

    def infer(self, ins):
        x = ins[0]
        f = node_features(x)
        if len(ins) == 1:  # one graph
            return x.with_shape((1, f))
        batch = ins[1]
        expect(batch.dtype == "int64" and batch.shape == x.shape[:1],
               f"an int64 graph id per node [{x.shape[0]}] as the second input", f"{batch.dtype} {batch.show()}",
               hint=f"declare it with batched = false and vocab = \"{self.graphs_axis}\"")
        return x.with_shape((self.graphs_axis, f))

    def flops(self, ins, out, sizes):
        return ins[0].numel(sizes)

    def to_torch(self, ins):
        from archc.nn.gnn import GlobalPool as M
        return M(ins[0].shape[1], self.reduce)


def _pool_examples() -> tuple[Example, ...]:
    # many nodes per graph: every graph id in [0, graphs) occurs, so max(id) + 1 == graphs at each size
    return (Example({}, (("nodes", 5), ("nodes",)), sizes={"nodes": 40, "graphs": 2}, dtype=("float32", "int64"),
                    vocab="graphs", batched=False),
            Example({}, (("nodes", 3),), sizes={"nodes": 6}, batched=False))


@register
class GlobalMeanPool(_GlobalPool):
    """Mean of node features per graph: [nodes, F] and graph ids [nodes] -> [graphs, F] (one input: [1, F])."""

    op: Literal["global_mean_pool"] = "global_mean_pool"
    reduce = "mean"
    examples = _pool_examples()


@register
class GlobalMaxPool(_GlobalPool):
    """Max of node features per graph: [nodes, F] and graph ids [nodes] -> [graphs, F] (one input: [1, F])."""

    op: Literal["global_max_pool"] = "global_max_pool"
    reduce = "max"
    examples = _pool_examples()


@register
class GlobalSumPool(_GlobalPool):
    """Sum of node features per graph: [nodes, F] and graph ids [nodes] -> [graphs, F] (one input: [1, F])."""

    op: Literal["global_sum_pool"] = "global_sum_pool"
    reduce = "sum"
    examples = _pool_examples()
