"""A learned free tensor: class tokens, register tokens, learned queries, position tables, layer scales."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from archc.ops.base import Example, Op, PosInt, TensorType, concrete, expect, expect_float, norm_axis, register


@register
class Parameter(Op):
    """A learned tensor of `shape`, alone or combined with the input: [batch, ...] -> [batch, ...].

    combine: "none" broadcasts it over the batch ([batch, *shape]; the input only gives the batch size:
    learned queries); "concat" joins it, broadcast over the batch, to the input along `dim` before
    (`position = "first"`) or after it (ViT's `cat([cls.expand(B, -1, -1), x], 1)`); "add" and "mul" broadcast
    it against the input's per-example axes, aligned at the last axis (a position table; a layer scale).
    With concat, add and mul, `shape` may start with a batch axis of 1, as torchvision stores its class token
    ([1, 1, 768]) and position table ([1, 197, 768]).
    """

    op: Literal["parameter"] = "parameter"
    shape: list[PosInt] = Field(min_length=1, description="the tensor's shape (no batch axis, or one of size 1 "
                                                          "with concat, add, mul)")
    combine: Literal["none", "concat", "add", "mul"] = Field(
        "none", description="none (the tensor over the batch), concat, add or mul with the input")
    dim: int = Field(1, description="concat: the axis to join along (batch axis = 0)")
    position: Literal["first", "last"] = Field("first", description="concat: the tensor before or after the input")
    init: Literal["zeros", "ones", "constant", "normal", "trunc_normal"] = Field(
        "normal", description="initial values: zeros, ones, constant (value), normal (0, std), trunc_normal "
                              "(0, std, cut at +-2 std)")
    std: float = Field(0.02, gt=0, description="normal, trunc_normal: standard deviation")
    value: float = Field(0.0, description="constant: the value (a layer scale's 1e-5, say)")

    family = "tensor"
    examples = (Example({"shape": [3, 4]}, ((5,),)),
                Example({"shape": [1, 6], "combine": "concat", "init": "zeros"}, ((4, 6),)),
                Example({"shape": [2, 5], "combine": "concat", "position": "last", "std": 1.0}, ((3, 5),)),
                Example({"shape": [4, 3], "combine": "add", "init": "trunc_normal"}, ((4, 3),)),
                Example({"shape": [3], "combine": "mul", "init": "constant", "value": 0.1}, (("seq", 3),),
                        sizes={"seq": 5}),
                Example({"shape": [3, 1, 1], "combine": "mul", "std": 1.0}, ((3, 4, 4),)),
                Example({"shape": [1, 1, 6], "combine": "concat", "std": 1.0}, ((4, 6),)),
                Example({"shape": [1, 4, 6], "combine": "add"}, ((4, 6),)))

    def infer(self, ins):
        (x,) = ins
        shape = tuple(self.shape)
        if self.combine == "none":
            return TensorType((x.shape[0], *shape) if x.batched else shape)
        expect_float(x)
        expect(x.batched, "a batched input [batch, ...]", x.show())
        if len(shape) == x.rank and shape[0] == 1:  # a leading batch axis of 1, broadcast over the batch
            shape = shape[1:]
        if self.combine == "concat":
            return self._concat(x, shape)
        features = x.features
        expect(len(shape) <= len(features), f"a shape of at most {len(features)} axes (the input's per-example "
               f"axes {list(features)}; a leading 1 for the batch axis)", str(list(self.shape)))
        for p, d in zip(reversed(shape), reversed(features)):
            expect(p == 1 or p == d, f"a shape that broadcasts against the input's per-example axes "
                   f"{list(features)} (each axis 1 or equal, aligned at the last)", str(list(self.shape)))
        return x

    def _concat(self, x: TensorType, shape: tuple[int, ...]) -> TensorType:
        expect(len(shape) == x.rank - 1, f"a shape of {x.rank - 1} axes (the input's per-example rank, "
               f"after a leading 1 for the batch axis) to concat", str(list(self.shape)))
        axis = norm_axis(self.dim, x.rank)
        expect(axis != 0, "dim naming a per-example axis", f"{self.dim} (the batch axis)")
        for a, (p, d) in enumerate(zip(shape, x.features), start=1):
            if a != axis:
                expect(p == d, f"shape equal to the input's on every axis but {axis}",
                       f"{list(self.shape)} against {x.show()} (axis {a} differs)")
        joined = concrete(x.shape[axis], "axis to concatenate along") + shape[axis - 1]
        return x.with_shape(x.shape[:axis] + (joined,) + x.shape[axis + 1:])

    def param_shapes(self, ins):
        return {"weight": tuple(self.shape)}

    def flops(self, ins, out, sizes):
        return out.numel(sizes) if self.combine in ("add", "mul") else 0

    def to_torch(self, ins):
        from archc.nn.tensor import Parameter as M
        axis = norm_axis(self.dim, ins[0].rank) if self.combine == "concat" else 0
        return M(tuple(self.shape), self.combine, axis, self.position == "first", self.init, self.std, self.value,
                 batched=ins[0].batched)

    def emit(self, e):
        x, t, w = e.ins[0], e.types[0], e.param("weight")
        if self.combine in ("add", "mul"):
            return e.op(self.combine.capitalize(), x, w)
        if self.combine == "none" and not t.batched:
            return w
        shape = list(self.shape)
        if self.combine == "concat" and len(shape) == t.rank:  # a leading batch axis of 1 (torchvision's)
            base, shape = w, shape[1:]
        else:
            base = e.op("Unsqueeze", w, e.ints(0))                                         # (1, *shape)
        wide = e.op("Expand", base, e.op("Concat", e.dims(x, 0, 1), e.ints(*shape), axis=0))  # (B, *shape)
        if self.combine == "none":
            return wide
        parts = (wide, x) if self.position == "first" else (x, wide)
        return e.op("Concat", *parts, axis=norm_axis(self.dim, t.rank))
