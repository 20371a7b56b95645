"""Dense ops: linear."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from archc.ops.base import Example, Op, PosInt, TensorType, concrete, expect, expect_float, register


@register
class Linear(Op):
    """Affine map over the last axis: [..., in] -> [..., out_features]."""

    op: Literal["linear"] = "linear"
    out_features: PosInt = Field(description="output features")
    bias: bool = Field(True, description="learn an additive bias")

    family = "dense"
    examples = (Example({"out_features": 5}, ((7,),)), Example({"out_features": 3, "bias": False}, ((2, 4),)))

    def infer(self, ins: list[TensorType]) -> TensorType:
        (x,) = ins
        expect_float(x)
        expect(x.rank >= 2, "an input with a feature axis [batch, ..., features]", x.show(),
               hint="add a flatten layer before linear")
        concrete(x.shape[-1], "feature axis")
        return x.with_shape(x.shape[:-1] + (self.out_features,))

    def param_shapes(self, ins: list[TensorType]) -> dict[str, tuple[int, ...]]:
        n_in = ins[0].shape[-1]
        shapes = {"weight": (self.out_features, n_in)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def flops(self, ins, out, sizes):
        return 2 * ins[0].numel(sizes) * self.out_features

    def to_torch(self, ins):
        from torch import nn
        return nn.Linear(ins[0].shape[-1], self.out_features, bias=self.bias)
