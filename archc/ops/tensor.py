"""Tensor ops: flatten, reshape, permute, dropout, the merge ops add, mul, concat, and scale (by a constant)."""
from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from archc.errors import ShapeError
from archc.ops.base import (Dim, Example, Op, TensorType, concrete, expect, norm_axis,
                            register)


@register
class Flatten(Op):
    """Merge axes start_dim..end_dim into one: [batch, 1, 28, 28] -> [batch, 784]."""

    op: Literal["flatten"] = "flatten"
    start_dim: int = Field(1, description="first axis to merge (batch axis = 0)")
    end_dim: int = Field(-1, description="last axis to merge")

    examples = (Example({}, ((1, 4, 4),)), Example({"start_dim": 2}, ((3, 2, 5),)))

    def infer(self, ins):
        (x,) = ins
        start, end = norm_axis(self.start_dim, x.rank, "start_dim"), norm_axis(self.end_dim, x.rank, "end_dim")
        expect(start >= 1, "start_dim >= 1 (the batch axis stays)", str(self.start_dim))
        expect(start <= end, "start_dim <= end_dim", f"{self.start_dim} > {self.end_dim}")
        span = x.shape[start:end + 1]
        merged: Dim = span[0] if len(span) == 1 else math.prod(concrete(d, "axis to flatten") for d in span)
        return x.with_shape(x.shape[:start] + (merged,) + x.shape[end + 1:])

    def flops(self, ins, out, sizes):
        return 0

    def to_torch(self, ins):
        from torch import nn
        return nn.Flatten(self.start_dim, self.end_dim)

    def emit(self, e):
        x, rank = e.ins[0], e.types[0].rank
        start, end = self.start_dim % rank, self.end_dim % rank
        if start == end:
            return x
        if start == 1 and end == rank - 1:
            return e.op("Flatten", x, axis=1)                                      # (B, rest)
        return e.op("Reshape", x, e.op("Concat", e.dims(x, 0, start), e.ints(-1), e.dims(x, end + 1), axis=0))


@register
class Reshape(Op):
    """Reshape each example to `shape` (batch axis implicit; one entry may be -1)."""

    op: Literal["reshape"] = "reshape"
    shape: list[int] = Field(description="per-example shape, e.g. [16, 7, 7]; one -1 is inferred")

    examples = (Example({"shape": [4, 3]}, ((12,),)), Example({"shape": [-1, 2]}, ((2, 3, 2),)))

    def infer(self, ins):
        (x,) = ins
        shape = list(self.shape)
        expect(all(d >= 1 or d == -1 for d in shape) and shape.count(-1) <= 1 and len(shape) >= 1,
               "positive sizes and at most one -1", str(shape))
        total = math.prod(concrete(d, "axis to reshape") for d in x.features)
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            expect(total % known == 0, f"sizes whose product divides {total} (the input's {x.show()})", str(shape))
            shape[shape.index(-1)] = total // known
        expect(math.prod(shape) == total, f"a shape of {total} elements (the input's {x.show()})",
               f"{self.shape} ({math.prod(shape)} elements)")
        return x.with_shape((x.shape[0], *shape))

    def flops(self, ins, out, sizes):
        return 0

    def to_torch(self, ins):
        from archc.nn.tensor import Reshape as M
        return M(self.shape)

    def emit(self, e):  # 0 copies the batch axis (allowzero = 0)
        return e.op("Reshape", e.ins[0], e.ints(0, *self.shape))


@register
class Permute(Op):
    """Reorder axes; `dims` includes the batch axis, which stays first: [0, 2, 1]."""

    op: Literal["permute"] = "permute"
    dims: list[int] = Field(description="a permutation of all axes, starting with 0")

    examples = (Example({"dims": [0, 2, 1]}, ((3, 5),)), Example({"dims": [0, 3, 1, 2]}, ((2, 3, 4),)))

    def infer(self, ins):
        (x,) = ins
        expect(sorted(self.dims) == list(range(x.rank)),
               f"a permutation of 0..{x.rank - 1} for input {x.show()}", str(self.dims))
        expect(self.dims[0] == 0, "dims starting with 0 (the batch axis stays first)", str(self.dims))
        return x.with_shape(tuple(x.shape[d] for d in self.dims))

    def flops(self, ins, out, sizes):
        return 0

    def to_torch(self, ins):
        from archc.nn.tensor import Permute as M
        return M(self.dims)

    def emit(self, e):
        return e.op("Transpose", e.ins[0], perm=list(self.dims))


@register
class Dropout(Op):
    """Zero elements with probability p during training (scaled by 1/(1-p)); identity at inference."""

    op: Literal["dropout"] = "dropout"
    p: float = Field(0.5, ge=0.0, lt=1.0, description="drop probability")

    family = "regularization"
    positions = "each"
    examples = (Example({"p": 0.3}, ((5,),)),)

    def infer(self, ins):
        return ins[0]

    def to_torch(self, ins):
        from torch import nn
        return nn.Dropout(self.p)

    def emit(self, e):  # identity at inference
        return e.ins[0]


def broadcast(ins: list[TensorType], what: str) -> tuple[Dim, ...]:
    """Numpy broadcasting of the inputs' shapes; symbolic axes must match by name."""
    rank = max(t.rank for t in ins)
    out: list[Dim] = []
    for axis in range(rank):
        sizes = [t.shape[axis - rank + t.rank] for t in ins if axis - rank + t.rank >= 0]
        dims = set(sizes)
        dims.discard(1) if len(dims) > 1 else None
        if len(dims) > 1:
            shapes = " and ".join(t.show() for t in ins)
            raise ShapeError(f"expected inputs of one shape (or broadcastable) to {what}, received {shapes}",
                             hint=f"axis {axis} differs: {' vs '.join(map(str, sizes))}")
        out.append(dims.pop())
    return tuple(out)


class _Elementwise(Op):
    """Element-wise merge of two or more inputs with numpy broadcasting."""

    arity = (2, None)
    family = "merge"
    positions = "each"
    module: ClassVar[str] = ""

    def infer(self, ins):
        dtypes = {t.dtype for t in ins}
        expect(len(dtypes) == 1, "inputs of one dtype", ", ".join(t.dtype for t in ins))
        # every input has the batch axis first, so ranks must agree: [batch, 3] would align batch with 4 in [batch, 4, 3]
        expect(len({t.rank for t in ins}) == 1, "inputs of one rank (batch axis included; size-1 axes broadcast)",
               " and ".join(t.show() for t in ins))
        shape = broadcast(ins, self.name())
        expect(shape[0] == "batch", "inputs that all have the batch axis first",
               " and ".join(t.show() for t in ins))
        return TensorType(shape, ins[0].dtype)

    def flops(self, ins, out, sizes):
        return (len(ins) - 1) * out.numel(sizes)

    def to_torch(self, ins):
        from archc.nn import tensor
        return getattr(tensor, self.module)()

    def emit(self, e):
        out = e.ins[0]
        for x in e.ins[1:]:
            out = e.op(self.module, out, x)  # "Add" / "Mul": torch's left-to-right order
        return out


@register
class Add(_Elementwise):
    """Sum of the inputs (residual connections)."""

    op: Literal["add"] = "add"
    module = "Add"
    examples = (Example({}, ((4, 3), (4, 3))), Example({}, ((2, 3, 3), (2, 1, 1), (2, 3, 3))))


@register
class Mul(_Elementwise):
    """Product of the inputs (gating)."""

    op: Literal["mul"] = "mul"
    module = "Mul"
    examples = (Example({}, ((5,), (5,))), Example({}, ((2, 3, 3), (2, 1, 1))))


@register
class Scale(Op):
    """Multiply by a constant: [batch, ...] -> same (T5's decoder output * d_model^-0.5, embeddings * sqrt(d))."""

    op: Literal["scale"] = "scale"
    # `value`, not `factor` or `scale`: the number is the whole attribute (as ONNX's Constant `value`), and `scale`
    # names attention's own score factor
    value: float = Field(description="the constant each element is multiplied by")

    family = "merge"
    positions = "each"
    examples = (Example({"value": 0.125}, (("seq", 4),), sizes={"seq": 3}), Example({"value": -2.5}, ((3, 2, 2),)))

    def infer(self, ins):
        (x,) = ins
        expect(x.dtype == "float32", "a float32 input", f"{x.dtype} {x.show()}",
               hint="scale multiplies features; token ids need an embedding first")
        return x

    def to_torch(self, ins):
        from archc.nn.tensor import Scale as M
        return M(self.value)

    def emit(self, e):
        return e.op("Mul", e.ins[0], e.scalar(self.value))


@register
class Concat(Op):
    """Join inputs along `dim` (torch convention: batch axis = 0, default 1 = channels/features)."""

    op: Literal["concat"] = "concat"
    dim: int = Field(1, description="axis to join along (not the batch axis)")

    arity = (2, None)
    family = "merge"
    examples = (Example({}, ((3,), (5,))), Example({"dim": 1}, ((2, 4, 4), (3, 4, 4))),
                Example({"dim": -1}, ((2, 3), (2, 1), (2, 2))))

    def infer(self, ins):
        first = ins[0]
        shapes = " and ".join(t.show() for t in ins)
        expect(all(t.rank == first.rank for t in ins), "inputs of one rank", shapes)
        expect(all(t.dtype == first.dtype for t in ins), "inputs of one dtype", ", ".join(t.dtype for t in ins))
        axis = norm_axis(self.dim, first.rank)
        expect(axis != 0, "dim naming a per-example axis", f"{self.dim} (the batch axis)")
        for a in range(first.rank):
            if a != axis:
                expect(len({t.shape[a] for t in ins}) == 1,
                       f"inputs equal on every axis but {axis}", f"{shapes} (axis {a} differs)")
        joined = sum(concrete(t.shape[axis], "axis to concatenate along") for t in ins)
        return first.with_shape(first.shape[:axis] + (joined,) + first.shape[axis + 1:])

    def flops(self, ins, out, sizes):
        return 0

    def to_torch(self, ins):
        from archc.nn.tensor import Concat as M
        return M(self.dim)

    def emit(self, e):
        return e.op("Concat", *e.ins, axis=self.dim)
