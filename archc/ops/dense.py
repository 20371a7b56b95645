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
    positions = "each"
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

    def linear_parts(self):
        return ("",)

    def to_torch(self, ins):
        from torch import nn
        return nn.Linear(ins[0].shape[-1], self.out_features, bias=self.bias)

    def emit(self, e):
        return e.linear(e.ins[0], "", self.bias, rank=e.types[0].rank)


@register
class GatedMLP(Op):
    """Gated feed-forward (SwiGLU, GeGLU): down(act(gate(x)) * up(x)): [..., dim] -> [..., out_features or dim].

    As Llama's and Gemma's MLP (Shazeer, "GLU Variants Improve Transformer"): three projections named
    gate_proj, up_proj and down_proj, as in Hugging Face transformers."""

    op: Literal["gated_mlp"] = "gated_mlp"
    hidden_features: PosInt = Field(description="width of the gate and up projections")
    out_features: PosInt | None = Field(None, description="output features (default: the input's)")
    activation: Literal["silu", "gelu", "gelu_tanh", "relu", "sigmoid"] = Field(
        "silu", description="the gate's activation: silu (SwiGLU), gelu or gelu_tanh (GeGLU), relu, sigmoid (GLU)")
    bias: bool = Field(False, description="learn biases in the three projections")

    family = "dense"
    positions = "each"
    examples = (Example({"hidden_features": 12}, (("seq", 6),), sizes={"seq": 5}),
                Example({"hidden_features": 8, "activation": "gelu_tanh", "bias": True, "out_features": 3}, ((5,),)))

    def _dim(self, x: TensorType) -> int:
        expect_float(x)
        expect(x.rank >= 2, "an input with a feature axis [batch, ..., features]", x.show())
        return concrete(x.shape[-1], "feature axis")

    def infer(self, ins):
        self._dim(ins[0])
        return ins[0].with_shape(ins[0].shape[:-1] + (self.out_features or ins[0].shape[-1],))

    def param_shapes(self, ins):
        d, h = self._dim(ins[0]), self.hidden_features
        out = self.out_features or d
        shapes: dict[str, tuple[int, ...]] = {"gate_proj.weight": (h, d), "up_proj.weight": (h, d),
                                              "down_proj.weight": (out, h)}
        if self.bias:
            shapes |= {"gate_proj.bias": (h,), "up_proj.bias": (h,), "down_proj.bias": (out,)}
        return shapes

    def flops(self, ins, out, sizes):
        rows = ins[0].numel(sizes) // self._dim(ins[0])
        d, h, o = self._dim(ins[0]), self.hidden_features, self.out_features or self._dim(ins[0])
        return rows * (2 * 2 * d * h + 2 * h * o + 5 * h)

    def linear_parts(self):
        return ("gate_proj", "up_proj", "down_proj")

    def to_torch(self, ins):
        from archc.nn.dense import GatedMLP as M
        d = self._dim(ins[0])
        return M(d, self.hidden_features, self.out_features or d, self.activation, self.bias)

    def emit(self, e):
        x, rank = e.ins[0], e.types[0].rank
        gate = e.linear(x, "gate_proj", self.bias, rank=rank)
        gate = {"silu": lambda g: e.op("Mul", g, e.op("Sigmoid", g)), "gelu": lambda g: e.op("Gelu", g),
                "gelu_tanh": lambda g: e.op("Gelu", g, approximate="tanh"), "relu": lambda g: e.op("Relu", g),
                "sigmoid": lambda g: e.op("Sigmoid", g)}[self.activation](gate)
        hidden = e.op("Mul", gate, e.linear(x, "up_proj", self.bias, rank=rank))        # (..., H)
        return e.linear(hidden, "down_proj", self.bias, rank=rank)                     # (..., O)

