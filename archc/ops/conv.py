"""Convolution and pooling over 1 or 2 spatial axes: [batch, C, L] or [batch, C, H, W]."""
from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from archc.ops.base import (Dim, Example, NonNegInt, Op, PosInt, as_tuple, concrete, expect, expect_float,
                            expect_rank, register)

IntOrList = PosInt | list[PosInt]
Padding = Literal["same", "valid"] | NonNegInt | list[NonNegInt]


def _out_len(size: Dim, k: int, s: int, p: int, d: int, what: str) -> int:
    """Output length of a window sliding over `size`: floor((L + 2p - d(k-1) - 1) / s) + 1."""
    n = concrete(size, f"{what} (or padding = \"same\")")
    span = d * (k - 1) + 1
    expect(n + 2 * p >= span, f"{what} of at least {span - 2 * p} for a window of {span} with padding {p}",
           str(n))
    return (n + 2 * p - span) // s + 1


class _ConvNd(Op):
    """Shared rule of conv1d/conv2d."""

    out_channels: PosInt = Field(description="output channels")
    kernel_size: IntOrList = Field(description="window size: an int or one per spatial axis")
    stride: IntOrList = Field(1, description="step: an int or one per spatial axis")
    padding: Padding = Field(0, description='zeros added per side, or "same"/"valid"')
    dilation: IntOrList = Field(1, description="spacing between kernel taps")
    groups: PosInt = Field(1, description="channel groups (in and out channels divisible by it)")
    bias: bool = Field(True, description="learn an additive bias")

    family = "conv"
    spatial: ClassVar[int] = 2

    def _geometry(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        n = self.spatial
        return (as_tuple(self.kernel_size, n, "kernel_size"), as_tuple(self.stride, n, "stride"),
                as_tuple(self.dilation, n, "dilation"))

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        expect_rank(x, (self.spatial + 2,), f"an input [batch, channels, {'L' if self.spatial == 1 else 'H, W'}]")
        c_in = concrete(x.shape[1], "channel axis")
        for what, n in (("input channels", c_in), ("out_channels", self.out_channels)):
            expect(n % self.groups == 0, f"{what} divisible by groups={self.groups}", str(n))
        k, s, d = self._geometry()
        if self.padding == "same":
            expect(all(v == 1 for v in s), 'stride 1 with padding = "same"', f"stride {self.stride}",
                   hint="use an explicit padding with strided convolutions")
            spatial = x.shape[2:]
        else:
            p = (0,) * self.spatial if self.padding == "valid" else as_tuple(self.padding, self.spatial, "padding")
            spatial = tuple(_out_len(x.shape[2 + i], k[i], s[i], p[i], d[i], f"spatial axis {2 + i}")
                            for i in range(self.spatial))
        return x.with_shape((x.shape[0], self.out_channels, *spatial))

    def param_shapes(self, ins):
        k, _, _ = self._geometry()
        shapes = {"weight": (self.out_channels, ins[0].shape[1] // self.groups, *k)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def flops(self, ins, out, sizes):
        k, _, _ = self._geometry()
        return 2 * (ins[0].shape[1] // self.groups) * math.prod(k) * out.numel(sizes)

    def to_torch(self, ins):
        from torch import nn
        cls = nn.Conv1d if self.spatial == 1 else nn.Conv2d
        args = (ins[0].shape[1], self.out_channels, self.kernel_size)
        kw = dict(stride=self.stride, dilation=self.dilation, groups=self.groups, bias=self.bias)
        if self.padding != "same":
            return cls(*args, padding=self.padding, **kw)
        # ONNX Runtime rejects auto_pad SAME with dilation: lower "same" to explicit pads instead
        k, _, d = self._geometry()
        totals = [d[i] * (k[i] - 1) for i in range(self.spatial)]
        if all(t % 2 == 0 for t in totals):
            return cls(*args, padding=tuple(t // 2 for t in totals), **kw)
        from archc.nn.conv import ConvSame  # odd total: torch pads the extra element at the end
        pads = [p for t in reversed(totals) for p in (t // 2, t - t // 2)]
        return ConvSame[self.spatial](*args, pads=pads, **kw)

    def _pads(self) -> list[int]:
        """ONNX pads (begins, then ends): "same" puts an odd total's extra element at the end, as torch does."""
        k, _, d = self._geometry()
        n = self.spatial
        if self.padding == "same":
            totals = [d[i] * (k[i] - 1) for i in range(n)]
            return [t // 2 for t in totals] + [t - t // 2 for t in totals]
        p = (0,) * n if self.padding == "valid" else as_tuple(self.padding, n, "padding")
        return [*p, *p]

    def emit(self, e):
        k, s, d = self._geometry()
        return e.op("Conv", e.ins[0], e.param("weight"), e.param("bias") if self.bias else None, kernel_shape=list(k),
                    strides=list(s), dilations=list(d), pads=self._pads(), group=self.groups)


@register
class Conv1d(_ConvNd):
    """1-D convolution: [batch, C, L] -> [batch, out_channels, L']."""

    op: Literal["conv1d"] = "conv1d"
    spatial = 1
    examples = (Example({"out_channels": 4, "kernel_size": 3}, ((2, 9),)),
                Example({"out_channels": 3, "kernel_size": 4, "padding": "same"}, ((2, 6),)),
                Example({"out_channels": 4, "kernel_size": 3, "padding": "same", "dilation": 2, "groups": 2},
                        ((2, 7),)))


@register
class Conv2d(_ConvNd):
    """2-D convolution: [batch, C, H, W] -> [batch, out_channels, H', W']."""

    op: Literal["conv2d"] = "conv2d"
    spatial = 2
    examples = (Example({"out_channels": 4, "kernel_size": 3, "padding": 1}, ((3, 8, 8),)),
                Example({"out_channels": 6, "kernel_size": [3, 1], "stride": 2, "groups": 3}, ((3, 9, 7),)),
                Example({"out_channels": 2, "kernel_size": 3, "padding": "same", "dilation": 2}, ((1, 6, 6),)))


class _PoolNd(Op):
    """Shared rule of max/avg pooling."""

    kernel_size: IntOrList = Field(description="window size: an int or one per spatial axis")
    stride: IntOrList | None = Field(None, description="step (default: kernel_size)")
    padding: NonNegInt | list[NonNegInt] = Field(0, description="implicit padding per side (<= kernel/2)")

    family = "conv"
    spatial: ClassVar[int] = 2
    kind: ClassVar[str] = "Max"

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        expect_rank(x, (self.spatial + 2,), f"an input [batch, channels, {'L' if self.spatial == 1 else 'H, W'}]")
        n = self.spatial
        k = as_tuple(self.kernel_size, n, "kernel_size")
        s = as_tuple(self.stride if self.stride is not None else self.kernel_size, n, "stride")
        p = as_tuple(self.padding, n, "padding")
        expect(all(2 * p[i] <= k[i] for i in range(n)), "padding at most half the kernel size",
               f"padding {self.padding} with kernel_size {self.kernel_size}")
        spatial = tuple(_out_len(x.shape[2 + i], k[i], s[i], p[i], 1, f"spatial axis {2 + i}") for i in range(n))
        return x.with_shape((*x.shape[:2], *spatial))

    def flops(self, ins, out, sizes):
        return math.prod(as_tuple(self.kernel_size, self.spatial, "kernel_size")) * out.numel(sizes)

    def to_torch(self, ins):
        from torch import nn
        cls = getattr(nn, f"{self.kind}Pool{self.spatial}d")
        return cls(self.kernel_size, stride=self.stride, padding=self.padding)

    def emit(self, e):  # torch's defaults: floor mode, padding counted in the average
        n = self.spatial
        k = as_tuple(self.kernel_size, n, "kernel_size")
        s = as_tuple(self.stride if self.stride is not None else self.kernel_size, n, "stride")
        p = list(as_tuple(self.padding, n, "padding"))
        extra = {"count_include_pad": 1} if self.kind == "Avg" else {}
        return e.op(f"{'Max' if self.kind == 'Max' else 'Average'}Pool", e.ins[0], kernel_shape=list(k),
                    strides=list(s), pads=p + p, **extra)


@register
class MaxPool1d(_PoolNd):
    """Max over sliding windows: [batch, C, L] -> [batch, C, L']."""

    op: Literal["max_pool1d"] = "max_pool1d"
    spatial, kind = 1, "Max"
    examples = (Example({"kernel_size": 2}, ((3, 8),)), Example({"kernel_size": 3, "stride": 1, "padding": 1}, ((2, 5),)))


@register
class MaxPool2d(_PoolNd):
    """Max over sliding windows: [batch, C, H, W] -> [batch, C, H', W']."""

    op: Literal["max_pool2d"] = "max_pool2d"
    spatial, kind = 2, "Max"
    examples = (Example({"kernel_size": 2}, ((3, 8, 8),)), Example({"kernel_size": 3, "stride": 2, "padding": 1}, ((2, 7, 5),)))


@register
class AvgPool1d(_PoolNd):
    """Mean over sliding windows: [batch, C, L] -> [batch, C, L']."""

    op: Literal["avg_pool1d"] = "avg_pool1d"
    spatial, kind = 1, "Avg"
    examples = (Example({"kernel_size": 2}, ((3, 8),)),)


@register
class AvgPool2d(_PoolNd):
    """Mean over sliding windows: [batch, C, H, W] -> [batch, C, H', W']."""

    op: Literal["avg_pool2d"] = "avg_pool2d"
    spatial, kind = 2, "Avg"
    examples = (Example({"kernel_size": 2}, ((3, 8, 8),)), Example({"kernel_size": [3, 2], "stride": 1}, ((2, 5, 4),)))


@register
class GlobalAvgPool(Op):
    """Mean over all spatial axes: [batch, C, ...] -> [batch, C]."""

    op: Literal["global_avg_pool"] = "global_avg_pool"

    family = "conv"
    examples = (Example({}, ((4, 5, 5),)), Example({}, ((3, 7),)))

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        expect(x.rank >= 3, "an input [batch, channels, spatial...]", x.show())
        return x.with_shape(x.shape[:2])

    def flops(self, ins, out, sizes):
        return ins[0].numel(sizes)

    def to_torch(self, ins):
        from archc.nn.conv import GlobalAvgPool as M
        return M()

    def emit(self, e):
        return e.op("ReduceMean", e.ins[0], e.ints(*range(2, e.types[0].rank)), keepdims=0)
