"""Padding ops."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from archc.ops.base import Example, NonNegInt, Op, concrete, expect, register


@register
class Pad(Op):
    """Constant padding of the trailing axes: `padding` lists (before, after) pairs, last axis first (as F.pad)."""

    op: Literal["pad"] = "pad"
    padding: list[NonNegInt] = Field(description="[left, right] for the last axis, then [top, bottom], ...")
    value: float = Field(0.0, description="fill value")

    examples = (Example({"padding": [1, 2]}, ((3, 5),)), Example({"padding": [1, 1, 2, 0]}, ((2, 4, 4),)))

    def infer(self, ins):
        (x,) = ins
        n = len(self.padding)
        expect(n % 2 == 0 and 0 < n // 2 < x.rank, f"an even number of pads covering at most {x.rank - 1} "
               "per-example axes", str(self.padding))
        shape = list(x.shape)
        for i in range(n // 2):  # pair i pads axis -(i + 1)
            shape[-(i + 1)] = concrete(shape[-(i + 1)], "axis to pad") + self.padding[2 * i] + self.padding[2 * i + 1]
        return x.with_shape(shape)

    def flops(self, ins, out, sizes):
        return 0

    def to_torch(self, ins):
        from torch import nn
        return {1: nn.ConstantPad1d, 2: nn.ConstantPad2d, 3: nn.ConstantPad3d}[len(self.padding) // 2](
            tuple(self.padding), self.value)

    def emit(self, e):
        rank, pairs = e.types[0].rank, len(self.padding) // 2
        begin, end = [0] * rank, [0] * rank
        for i in range(pairs):  # pair i pads axis -(i + 1)
            begin[rank - 1 - i], end[rank - 1 - i] = self.padding[2 * i], self.padding[2 * i + 1]
        return e.op("Pad", e.ins[0], e.ints(*begin, *end), e.scalar(self.value), mode="constant")
