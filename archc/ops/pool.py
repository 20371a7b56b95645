"""Adaptive pooling: windows chosen so the output has a given size, as torch's AdaptiveAvg/MaxPool1d/2d."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archc.ops.base import Example, Op, PosInt, TensorType, concrete, expect, expect_float, expect_rank, register

# "keep" (or JSON's null, torch's None) keeps an axis' size: TOML has no null
OutputSize = PosInt | list[PosInt | Literal["keep"] | None]


class _AdaptivePoolNd(Op):
    """Shared rule: [batch, C, *spatial] -> [batch, C, *output_size] ("keep" or None keeps that axis' size)."""

    output_size: OutputSize = Field(description='output size: an int, or one per spatial axis ("keep" or null: '
                                                'that axis keeps its size)')

    family = "conv"
    spatial: ClassVar[int] = 2
    kind: ClassVar[str] = "mean"

    def _sizes(self, x: TensorType) -> list[tuple[int, int] | None]:
        """(input, output) length per spatial axis; None where the axis is kept as it is."""
        expect_float(x)
        expect_rank(x, (self.spatial + 2,), f"an input [batch, channels, {'L' if self.spatial == 1 else 'H, W'}]")
        want = [self.output_size] * self.spatial if isinstance(self.output_size, int) else list(self.output_size)
        expect(len(want) == self.spatial, f"output_size as one int or a list of {self.spatial}",
               str(self.output_size))
        return [None if o is None or o == "keep" else (concrete(x.shape[2 + a], f"spatial axis {2 + a}"), o)
                for a, o in enumerate(want)]

    def infer(self, ins):
        (x,) = ins
        sizes = self._sizes(x)
        spatial = tuple(d if s is None else s[1] for d, s in zip(x.shape[2:], sizes))
        return x.with_shape((*x.shape[:2], *spatial))

    def flops(self, ins, out, sizes):
        return ins[0].numel(sizes)  # every input element is read about once (more where windows overlap)

    def to_torch(self, ins):
        from archc.nn.conv import AdaptivePool
        return AdaptivePool(self.kind, self._sizes(ins[0]))

    def emit(self, e):
        """Axis by axis, as archc.nn.conv.AdaptivePool: cell i of an axis of length n pools
        [floor(i n / o), ceil((i + 1) n / o)); the cells are joined along the axis."""
        reduce = "ReduceMax" if self.kind == "max" else "ReduceMean"
        x = e.ins[0]
        for axis, size in enumerate(self._sizes(e.types[0]), start=2):
            if size is None or size[0] == size[1]:
                continue
            n, o = size
            cells = [e.op(reduce, e.op("Slice", x, e.ints((i * n) // o), e.ints(-((-(i + 1) * n) // o)), e.ints(axis)),
                          e.ints(axis), keepdims=1) for i in range(o)]
            x = cells[0] if o == 1 else e.op("Concat", *cells, axis=axis)
        return x


_EX1 = (Example({"output_size": 4}, ((3, 8),)), Example({"output_size": 3}, ((2, 7),)),
        Example({"output_size": 5}, ((2, 3),)))
_EX2 = (Example({"output_size": 2}, ((3, 8, 8),)), Example({"output_size": [3, "keep"]}, ((2, 7, 5),)),
        Example({"output_size": [1, 4]}, ((2, 5, 6),)), Example({"output_size": 7}, ((1, 7, 7),)))


@register
class AdaptiveAvgPool1d(_AdaptivePoolNd):
    """Mean over windows that make the output output_size long: [batch, C, L] -> [batch, C, output_size]."""

    op: Literal["adaptive_avg_pool1d"] = "adaptive_avg_pool1d"
    spatial, kind = 1, "mean"
    examples = _EX1


@register
class AdaptiveAvgPool2d(_AdaptivePoolNd):
    """Mean over windows that make the output output_size: [batch, C, H, W] -> [batch, C, h, w] (VGG's head)."""

    op: Literal["adaptive_avg_pool2d"] = "adaptive_avg_pool2d"
    spatial, kind = 2, "mean"
    examples = _EX2


@register
class AdaptiveMaxPool1d(_AdaptivePoolNd):
    """Max over windows that make the output output_size long: [batch, C, L] -> [batch, C, output_size]."""

    op: Literal["adaptive_max_pool1d"] = "adaptive_max_pool1d"
    spatial, kind = 1, "max"
    examples = _EX1


@register
class AdaptiveMaxPool2d(_AdaptivePoolNd):
    """Max over windows that make the output output_size: [batch, C, H, W] -> [batch, C, h, w]."""

    op: Literal["adaptive_max_pool2d"] = "adaptive_max_pool2d"
    spatial, kind = 2, "max"
    examples = _EX2
