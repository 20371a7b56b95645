"""What an op's `emit` hook writes with: its inputs, their archc types, its parameters, and ONNX nodes named
after its spec id (onnx-ir underneath).

Names: a spec node that emits one ONNX node gives it its id; one that emits several names them `id/OpType`,
numbered when repeated (`id/MatMul`, `id/MatMul_1`), as the TorchScript path's annotate did. Each ONNX node's
output value is named as the node; the spec node's output value is renamed to the id (archc.emit.graph).
Parameters are initializers under their state_dict names, made once per name (tied weights are one tensor).

One emitter writes both files of a decoder: `model.onnx`, and with a `KVCache` on the graph emitter the KV-cache
graph `model.kv.onnx` (archc.export.kvcache). The ops that read positions ask the Emitter (`positions`, `span`,
`key_positions`), which answers 0..T-1 for the plain graph and past..past+T-1 for the cached one; attention takes
its past keys/values from `e.cache` and hands back the present ones. So each op has one emit for both files.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import onnx_ir as ir

from archc.ops.base import TensorType

if TYPE_CHECKING:
    from archc.emit.graph import GraphEmitter

DTYPES = {"float32": ir.DataType.FLOAT, "int64": ir.DataType.INT64, "bool": ir.DataType.BOOL}


def value_type(t: TensorType) -> tuple[ir.TensorType, ir.Shape]:
    """archc's type as onnx-ir's: fixed sizes stay ints, symbolic axes keep their spec names."""
    return ir.TensorType(DTYPES[t.dtype]), ir.Shape([d if isinstance(d, int) else ir.SymbolicDim(d) for d in t.shape])


def _attr(name: str, value: Any) -> ir.Attr:
    """A node attribute from a Python value (ints and floats as ONNX wants them, a list by its first item)."""
    if isinstance(value, bool):
        return ir.AttrInt64(name, int(value))
    if isinstance(value, int):
        return ir.AttrInt64(name, value)
    if isinstance(value, float):
        return ir.AttrFloat32(name, value)
    if isinstance(value, str):
        return ir.AttrString(name, value)
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], str):
            return ir.AttrStrings(name, list(value))
        if value and isinstance(value[0], float):
            return ir.AttrFloat32s(name, [float(v) for v in value])
        return ir.AttrInt64s(name, [int(v) for v in value])
    if isinstance(value, ir.TensorProtocol):
        return ir.AttrTensor(name, value)
    raise TypeError(f"attribute {name}: {type(value).__name__}")


class KVCache:
    """The KV-cache graph's emit mode: its token input [batch, new] (every sequence in a cacheable decoder has its
    length), the past keys/values the attention layers read in graph order (graph inputs [batch, kv_heads, past,
    head_dim]), the presents they return, and values every layer reads (the past length, positions, masks),
    computed once per graph."""

    def __init__(self, tokens: ir.Value, past: list[tuple[ir.Value, ir.Value]]) -> None:
        self.tokens, self.past = tokens, past
        self.present: list[tuple[ir.Value, ir.Value]] = []
        self.shared: dict[Any, Any] = {}

    def take(self, e: "Emitter") -> tuple[ir.Value, ir.Value]:
        """The past (key, value) [batch, kv_heads, past, head_dim] of the next attention layer (`e`, its emitter)."""
        return self.past[len(self.present)]

    def give(self, key: ir.Value, value: ir.Value) -> None:
        """The present (key, value) [batch, kv_heads, past + new, head_dim] of the layer that took the last past."""
        self.present.append((key, value))

    def once(self, key: Any, make: Any) -> Any:
        """make() the first time `key` is asked for, the same value after (every layer reads it)."""
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]


class Emitter:
    """One spec node's scope: `ins` (ONNX values) typed `types`, `out` its inferred type, `param(name)` its weights.

    `op` adds an ONNX node and returns its output value; constants are Constant nodes (initializers hold the
    state_dict's weights only)."""

    def __init__(self, owner: "GraphEmitter", scope: str, path: str, ins: list[ir.Value], types: list[TensorType],
                 out: TensorType, tied: str | None = None) -> None:
        self.owner, self.scope, self.path = owner, scope, path
        self.ins, self.types, self.out = ins, types, out
        self.tied_path = tied
        self.nodes: list[ir.Node] = []
        self._count: Counter[str] = Counter()

    # ---- weights -----------------------------------------------------------------------------
    def param(self, name: str) -> ir.Value:
        """The initializer of this node's parameter or buffer `name` ('weight', 'q_proj.bias', 'running_mean')."""
        return self.owner.initializer(f"{self.path}.{name}")

    def tied(self, name: str) -> ir.Value:
        """The initializer of the tied node's parameter `name` (weight tying: one tensor, two readers)."""
        assert self.tied_path is not None, "tied() is for ops with `ties`"
        return self.owner.initializer(f"{self.tied_path}.{name}")

    # ---- nodes -------------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: ir.Value | None, **attrs: Any) -> ir.Value:
        """Add one ONNX node (default domain) on `inputs`; its single output value."""
        return self.ops(op_type, *inputs, outputs=1, **attrs)[0]

    def ops(self, op_type: str, *inputs: ir.Value | None, outputs: int, **attrs: Any) -> Sequence[ir.Value]:
        """Add one ONNX node with several outputs (Split, LayerNormalization's extras are not asked for)."""
        while inputs and inputs[-1] is None:  # trailing absent inputs are left out (ORT's LayerNormalization
            inputs = inputs[:-1]                # crashes on an empty last input name)
        self._count[op_type] += 1
        k = self._count[op_type]
        name = f"{self.scope}/{op_type}" + (f"_{k - 1}" if k > 1 else "")
        node = ir.Node("", op_type, inputs, [_attr(a, v) for a, v in attrs.items() if v is not None],
                       num_outputs=outputs, name=name)
        for i, v in enumerate(node.outputs):
            v.name = name if outputs == 1 else f"{name}:{i}"
        self.nodes.append(node)
        return node.outputs

    def const(self, value: Any, dtype: str = "float32") -> ir.Value:
        """A constant tensor (a Python number or list, or an array) as a Constant node."""
        array = np.asarray(value, dtype=np.dtype(dtype))
        return self.op("Constant", value=ir.tensor(array))

    def ints(self, *values: int) -> ir.Value:
        """A 1-D int64 constant (axes, shapes, slice bounds)."""
        return self.const(list(values), "int64")

    def scalar(self, value: float | int, dtype: str = "float32") -> ir.Value:
        return self.const(value, dtype)

    def dims(self, x: ir.Value, start: int, end: int | None = None) -> ir.Value:
        """Axes start..end of x's shape, as a 1-D int64 value (Shape with start/end)."""
        return self.op("Shape", x, start=start, end=end)

    # ---- positions (the plain graph: 0..T-1; the KV-cache graph: past..past+T-1) ----------------
    @property
    def cache(self) -> KVCache | None:
        """The KV-cache graph's mode (archc.export.kvcache), None for the plain graph."""
        return self.owner.cache

    def span(self, x: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(start, end) of the positions of x's sequence axis (axis 1), each a 1-D int64: (0, T), or in the KV-cache
        graph (past, past + new), past read from the first past key."""
        cache = self.cache
        if cache is None:
            return self.ints(0), self.dims(x, 1, 2)

        def make() -> tuple[ir.Value, ir.Value]:
            past = self.op("Shape", cache.past[0][0], start=2, end=3)
            return past, self.op("Add", past, self.dims(cache.tokens, 1, 2))
        return cache.once("span", make)

    def positions(self, x: ir.Value) -> ir.Value:
        """The absolute positions of x's sequence axis (axis 1): int64 (T,), 0..T-1, or past..past+new-1 in the
        KV-cache graph."""
        if self.cache is None:
            length = self.op("Squeeze", self.dims(x, 1, 2), self.ints(0))
            return self.op("Range", self.scalar(0, "int64"), length, self.scalar(1, "int64"))
        return self.cache.once("positions", lambda: self._range(*self.span(x)))

    def key_positions(self, x: ir.Value) -> ir.Value:
        """The positions of the keys a query of x's sequence reads: int64 (S,), 0..T-1, or 0..past+new-1 in the
        KV-cache graph (the cached keys, then the new ones)."""
        if self.cache is None:
            return self.positions(x)
        return self.cache.once("key positions", lambda: self._range(self.ints(0), self.span(x)[1]))

    def _range(self, start: ir.Value, end: ir.Value) -> ir.Value:
        """start..end-1 (1-D int64 bounds of one element each) as int64 (n,)."""
        squeeze = lambda v: self.op("Squeeze", v, self.ints(0))  # noqa: E731
        return self.op("Range", squeeze(start), squeeze(end), self.scalar(1, "int64"))

    # ---- compound helpers --------------------------------------------------------------------
    def linear(self, x: ir.Value, prefix: str = "", bias: bool = True, rank: int = 3) -> ir.Value:
        """x @ W^T (+ b) for the nn.Linear at `prefix` of this node ('' its own weight): (..., in) -> (..., out).

        MatMul with the transposed weight (ONNX Runtime folds the Transpose of an initializer when it loads), or
        Gemm(transB=1) for a 2-D input, as torch's exporter writes them."""
        key = f"{prefix}." if prefix else ""
        w = self.param(f"{key}weight")
        b = self.param(f"{key}bias") if bias else None
        return self.affine(x, w, b, rank)

    def affine(self, x: ir.Value, w: ir.Value, b: ir.Value | None, rank: int = 3) -> ir.Value:
        """x @ w^T + b with w (out, in) and x of this rank: Gemm for rank 2, else MatMul(x, Transpose(w)) + b."""
        if rank == 2:
            return self.op("Gemm", x, w, b, transB=1)
        y = self.op("MatMul", x, self.op("Transpose", w, perm=[1, 0]))
        return self.op("Add", y, b) if b is not None else y
