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

    def emit(self, e):
        x, (src, dst), n = e.ins[0], _edges(e), e.dims(e.ins[0], 0, 1)
        o = self.out_features
        h = e.affine(x, e.param("weight"), None, rank=2)                                     # (N, O)
        if self.normalize:
            deg = _segment_count(e, dst, n)
            if self.add_self_loops:
                deg = e.op("Add", deg, e.scalar(1.0))                                        # (N,)
            inv = e.op("Where", e.op("Greater", deg, e.scalar(0.0)),
                       e.op("Reciprocal", e.op("Sqrt", e.op("Max", deg, e.scalar(1.0)))), e.scalar(0.0))
            inv = e.op("Unsqueeze", inv, e.ints(1))                                          # (N, 1); isolated: 0
            hs = e.op("Mul", h, inv)
            out = _segment(e, "add", e.op("Gather", hs, src, axis=0), dst, n, (o,))          # (N, O)
            if self.add_self_loops:
                out = e.op("Add", out, hs)
            out = e.op("Mul", out, inv)
        else:
            out = _segment(e, "add", e.op("Gather", h, src, axis=0), dst, n, (o,))
            if self.add_self_loops:
                out = e.op("Add", out, h)
        return e.op("Add", out, e.param("bias")) if self.bias else out


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

    def emit(self, e):
        x, (src, dst), n = e.ins[0], _edges(e), e.dims(e.ins[0], 0, 1)
        msg = e.op("Gather", x, src, axis=0)                                                 # (E, F)
        agg = _aggregate(e, self.aggr, msg, dst, n, (e.types[0].shape[1],))                 # (N, F)
        return e.op("Add", e.linear(x, "lin_self", False, rank=2), e.linear(agg, "lin_neigh", self.bias, rank=2))


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

    def emit(self, e):
        x, (src, dst), n = e.ins[0], _edges(e), e.dims(e.ins[0], 0, 1)
        heads, c = self.heads, self.out_features
        if self.add_self_loops:
            loop = e.op("Range", e.scalar(0, "int64"), e.op("Squeeze", n, e.ints(0)), e.scalar(1, "int64"))
            src, dst = e.op("Concat", src, loop, axis=0), e.op("Concat", dst, loop, axis=0)
        h = e.op("Reshape", e.affine(x, e.param("weight"), None, rank=2), e.ints(-1, heads, c))  # (N, H, C)
        a_src, a_dst = (e.op("ReduceSum", e.op("Mul", h, e.param(p)), e.ints(-1), keepdims=0)
                        for p in ("att_src", "att_dst"))                                         # (N, H)
        scores = e.op("LeakyRelu", e.op("Add", e.op("Gather", a_src, src, axis=0), e.op("Gather", a_dst, dst, axis=0)),
                      alpha=self.negative_slope)                                                 # (E, H)
        top = _segment(e, "max", scores, dst, n, (heads,))                                      # (N, H)
        w = e.op("Exp", e.op("Sub", scores, e.op("Gather", top, dst, axis=0)))
        total = e.op("Gather", _segment(e, "add", w, dst, n, (heads,)), dst, axis=0)
        alpha = e.op("Div", w, e.op("Add", total, e.scalar(1e-16)))                             # (E, H)
        msg = e.op("Mul", e.op("Gather", h, src, axis=0), e.op("Unsqueeze", alpha, e.ints(-1)))  # (E, H, C)
        out = _segment(e, "add", msg, dst, n, (heads, c))                                        # (N, H, C)
        out = e.op("Reshape", out, e.ints(0, -1)) if self.concat else e.op("ReduceMean", out, e.ints(1), keepdims=0)
        return e.op("Add", out, e.param("bias")) if self.bias else out


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

    def emit(self, e):
        x = e.ins[0]
        if len(e.ins) == 1:  # one graph: (1, F)
            return e.op({"mean": "ReduceMean", "sum": "ReduceSum", "max": "ReduceMax"}[self.reduce], x, e.ints(0),
                        keepdims=1)
        batch = e.ins[1]
        g = e.op("Add", e.op("ReduceMax", batch, keepdims=1), e.scalar(1, "int64"))            # (1,): max(id) + 1
        return _aggregate(e, {"sum": "add"}.get(self.reduce, self.reduce), x, batch, g, (e.types[0].shape[1],))


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


# ---- segment reductions in ONNX (archc.nn.gnn's, as its export writes them: ScatterND with a reduction) -----------
def _edges(e):
    """Sources and targets: rows 0 and 1 of edge_index (2, E), each (E,)."""
    edges = e.ins[1]
    return (e.op("Gather", edges, e.scalar(0, "int64"), axis=0), e.op("Gather", edges, e.scalar(1, "int64"), axis=0))


def _segment(e, reduction: str, src, index, n, tail: tuple[int, ...]):
    """Rows of src (E, *tail) reduced ("add" / "max") per index in [0, n) (n: a 1-D int64 [n]): (n, *tail); 0 or
    -inf where no row falls."""
    import numpy as np
    import onnx_ir as ir

    fill = 0.0 if reduction == "add" else float("-inf")
    start = e.op("ConstantOfShape", e.op("Concat", n, e.ints(*tail), axis=0) if tail else n,
                 value=ir.tensor(np.array([fill], np.float32)))
    return e.op("ScatterND", start, e.op("Unsqueeze", index, e.ints(1)), src, reduction=reduction)


def _segment_count(e, index, n):
    """How many entries of index equal each of 0..n-1: float32 (n,)."""
    import numpy as np
    import onnx_ir as ir

    ones = e.op("ConstantOfShape", e.op("Shape", index), value=ir.tensor(np.array([1.0], np.float32)))
    return _segment(e, "add", ones, index, n, ())


def _aggregate(e, aggr: str, msg, index, n, tail: tuple[int, ...]):
    """mean / add / max of the rows of msg per index: (n, *tail); an index no row falls on gets 0."""
    if aggr == "max":
        agg = _segment(e, "max", msg, index, n, tail)
        return e.op("Where", e.op("Equal", agg, e.scalar(float("-inf"))), e.scalar(0.0), agg)
    agg = _segment(e, "add", msg, index, n, tail)
    if aggr != "mean":
        return agg
    count = e.op("Max", _segment_count(e, index, n), e.scalar(1.0))
    return e.op("Div", agg, e.op("Unsqueeze", count, e.ints(1)))
