"""Normalization ops: batchnorm (over the channel axis), layernorm (over trailing axes), group norm."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from archc.ops.base import Example, Op, PosInt, TensorType, concrete, expect, expect_float, register


@register
class BatchNorm(Op):
    """Batch normalization over axis 1 (features or channels): [batch, C, ...] -> same."""

    op: Literal["batchnorm"] = "batchnorm"
    eps: float = Field(1e-5, gt=0, description="added to the variance")
    momentum: float = Field(0.1, gt=0, le=1, description="running-statistics update rate")
    affine: bool = Field(True, description="learn a scale and shift")

    family = "norm"
    examples = (Example({}, ((6,),)), Example({}, ((3, 5),)), Example({"affine": False}, ((4, 3, 3),)))

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        expect(2 <= x.rank <= 5, "an input [batch, C], [batch, C, L], [batch, C, H, W] or [batch, C, D, H, W]",
               x.show())
        concrete(x.shape[1], "channel axis")
        return x

    def param_shapes(self, ins):
        c = ins[0].shape[1]
        return {"weight": (c,), "bias": (c,)} if self.affine else {}

    def batch_statistics(self, ins):
        return all(d == 1 for d in ins[0].shape[2:])  # no positions (or all of size 1) to normalize over

    def flops(self, ins, out, sizes):
        return 2 * out.numel(sizes)

    def to_torch(self, ins):
        from archc.nn.norm import BatchNorm1d, BatchNorm2d, BatchNorm3d
        cls = {2: BatchNorm1d, 3: BatchNorm1d, 4: BatchNorm2d, 5: BatchNorm3d}[ins[0].rank]
        return cls(ins[0].shape[1], eps=self.eps, momentum=self.momentum, affine=self.affine)

    def emit(self, e):  # inference: the running statistics
        c = e.types[0].shape[1]
        scale, shift = (e.param("weight"), e.param("bias")) if self.affine else (e.const([1.0] * c), e.const([0.0] * c))
        return e.op("BatchNormalization", e.ins[0], scale, shift, e.param("running_mean"), e.param("running_var"),
                    epsilon=self.eps)


@register
class LayerNorm(Op):
    """Layer normalization over the last `dims` axes: [..., features] -> same."""

    op: Literal["layernorm"] = "layernorm"
    dims: PosInt = Field(1, description="how many trailing axes to normalize over")
    eps: float = Field(1e-5, gt=0, description="added to the variance")
    elementwise_affine: bool = Field(True, description="learn a scale and shift")
    bias: bool = Field(True, description="learn the shift (with elementwise_affine)")

    family = "norm"
    positions = "each"
    examples = (Example({}, ((6,),)), Example({"dims": 2}, ((3, 4),)), Example({"bias": False}, ((2, 5),)))

    def mixes_positions(self) -> str:
        return "" if self.dims == 1 else f"layernorm over its last {self.dims} axes mixes positions; a KV cache " \
                                         f"needs it on the last axis alone"

    def _shape(self, x: TensorType) -> tuple[int, ...]:
        expect(self.dims < x.rank, f"dims < {x.rank} (the input's rank, batch axis included)", str(self.dims))
        expect_float(x)
        return tuple(concrete(d, "axis to normalize over") for d in x.shape[x.rank - self.dims:])

    def infer(self, ins):
        self._shape(ins[0])
        return ins[0]

    def param_shapes(self, ins):
        shape = self._shape(ins[0])
        if not self.elementwise_affine:
            return {}
        return {"weight": shape, "bias": shape} if self.bias else {"weight": shape}

    def flops(self, ins, out, sizes):
        return 5 * out.numel(sizes)

    def to_torch(self, ins):
        from torch import nn
        return nn.LayerNorm(self._shape(ins[0]), eps=self.eps, elementwise_affine=self.elementwise_affine,
                            bias=self.bias)

    def emit(self, e):  # ONNX's fused LayerNormalization (opset 17)
        import numpy as np
        affine = self.elementwise_affine
        scale = e.param("weight") if affine else e.const(np.ones(self._shape(e.types[0]), np.float32))
        shift = e.param("bias") if affine and self.bias else None
        return e.op("LayerNormalization", e.ins[0], scale, shift, axis=-self.dims, epsilon=self.eps)


@register
class RMSNorm(Op):
    """Root-mean-square normalization over the last axis (no centering): [..., features] -> same."""

    op: Literal["rmsnorm"] = "rmsnorm"
    eps: float = Field(1e-6, gt=0, description="added to the mean square")
    elementwise_affine: bool = Field(True, description="learn a per-feature scale")

    family = "norm"
    positions = "each"
    examples = (Example({}, (("seq", 6),), sizes={"seq": 5}), Example({"elementwise_affine": False}, ((7,),)))

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        expect(x.rank >= 2, "an input with a feature axis [batch, ..., features]", x.show())
        concrete(x.shape[-1], "axis to normalize over")
        return x

    def param_shapes(self, ins):
        return {"weight": (ins[0].shape[-1],)} if self.elementwise_affine else {}

    def flops(self, ins, out, sizes):
        return 4 * out.numel(sizes)

    def to_torch(self, ins):
        from archc.nn.norm import RMSNorm as M
        return M(ins[0].shape[-1], eps=self.eps, elementwise_affine=self.elementwise_affine)

    def emit(self, e):  # ONNX's fused RMSNormalization (opset 23)
        scale = e.param("weight") if self.elementwise_affine else e.const([1.0] * e.types[0].shape[-1])
        return e.op("RMSNormalization", e.ins[0], scale, axis=-1, epsilon=self.eps)


@register
class GroupNorm(Op):
    """Group normalization over num_groups channel groups (C divisible by it): [batch, C, ...] -> same.

    Each group is normalized over its channels and all positions, per example.
    """

    op: Literal["group_norm"] = "group_norm"
    num_groups: PosInt = Field(description="channel groups (1: layer norm over C and positions; C: instance norm)")
    eps: float = Field(1e-5, gt=0, description="added to the variance")
    affine: bool = Field(True, description="learn a per-channel scale and shift")

    family = "norm"
    examples = (Example({"num_groups": 2}, ((4, 5, 5),)), Example({"num_groups": 3, "affine": False}, ((6, 7),)),
                Example({"num_groups": 1}, ((4,),)))

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        expect(x.rank >= 2, "an input [batch, C, ...]", x.show())
        c = concrete(x.shape[1], "channel axis")
        expect(c % self.num_groups == 0, f"channels divisible by num_groups = {self.num_groups}", f"{c} channels",
               hint=f"pick num_groups among the divisors of {c}")
        # One value per group normalizes to a constant, and torch refuses it ("more than 1 value per channel")
        # whenever the batch has one example: at inference on one input, and in the exporter's parity check.
        positions = x.shape[2:]
        if all(isinstance(d, int) for d in positions):
            per_group = c // self.num_groups * math.prod(positions)  # type: ignore[arg-type]
            expect(per_group > 1, "more than one value per group (channels / num_groups x positions)",
                   f"{per_group} ({c} channels in {self.num_groups} groups, positions {list(positions)})",
                   hint="use fewer groups, or layernorm / batchnorm for [batch, C] inputs")
        return x

    def param_shapes(self, ins):
        c = ins[0].shape[1]
        return {"weight": (c,), "bias": (c,)} if self.affine else {}

    def flops(self, ins, out, sizes):
        return 5 * out.numel(sizes)

    def to_torch(self, ins):
        from torch import nn
        return nn.GroupNorm(self.num_groups, ins[0].shape[1], eps=self.eps, affine=self.affine)

    def emit(self, e):
        """As torch's exporter writes it: InstanceNormalization over [batch, groups, rest], then the channels' affine
        (ONNX's GroupNormalization-21 is not in every runtime's kernels)."""
        x, t = e.ins[0], e.types[0]
        g = self.num_groups
        grouped = e.op("Reshape", x, e.ints(0, g, -1))                                      # (B, G, C/G * S)
        y = e.op("InstanceNormalization", grouped, e.const([1.0] * g), e.const([0.0] * g), epsilon=self.eps)
        y = e.op("Reshape", y, e.dims(x, 0))                                               # (B, C, ...)
        if not self.affine:
            return y
        per_channel = e.ints(t.shape[1], *[1] * (t.rank - 2))                              # (C, 1, ...)
        return e.op("Add", e.op("Mul", y, e.op("Reshape", e.param("weight"), per_channel)),
                    e.op("Reshape", e.param("bias"), per_channel))
