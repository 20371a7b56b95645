"""U-Net and diffusion ops: transposed convolution, upsampling, timestep embedding, and the per-example
vectors (time embeddings) broadcast onto feature maps. Group norm lives with the other norms (norm.py)."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from archc.ops.base import (Example, NonNegInt, Op, PosInt, TensorType, as_tuple, concrete, expect, expect_float,
                            expect_rank, register)
from archc.ops.conv import IntOrList


@register
class ConvTranspose2d(Op):
    """Transposed 2-D convolution (learned upsampling): [batch, C, H, W] -> [batch, out_channels, H', W'].

    H' = (H - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1.
    """

    op: Literal["conv_transpose2d"] = "conv_transpose2d"
    out_channels: PosInt = Field(description="output channels")
    kernel_size: IntOrList = Field(description="window size: an int or [k_h, k_w]")
    stride: IntOrList = Field(1, description="upsampling factor: an int or [s_h, s_w]")
    padding: NonNegInt | list[NonNegInt] = Field(0, description="rows/columns cropped from each side of the output")
    output_padding: NonNegInt | list[NonNegInt] = Field(
        0, description="extra rows/columns on one side (to reach even sizes); < stride (ONNX Runtime's rule: torch "
                       "also takes < dilation, which the exported model cannot run)")
    dilation: IntOrList = Field(1, description="spacing between kernel taps")
    groups: PosInt = Field(1, description="channel groups (in and out channels divisible by it)")
    bias: bool = Field(True, description="learn an additive bias")

    family = "conv"
    examples = (Example({"out_channels": 4, "kernel_size": 4, "stride": 2, "padding": 1}, ((3, 5, 5),)),
                Example({"out_channels": 6, "kernel_size": [3, 2], "stride": [2, 1], "output_padding": [1, 0],
                         "groups": 3}, ((3, 4, 5),)),
                Example({"out_channels": 2, "kernel_size": 3, "dilation": 2, "bias": False}, ((2, 4, 4),)))

    def _geometry(self) -> list[tuple[int, ...]]:
        return [as_tuple(v, 2, what) for v, what in ((self.kernel_size, "kernel_size"), (self.stride, "stride"),
                                                     (self.padding, "padding"), (self.output_padding, "output_padding"),
                                                     (self.dilation, "dilation"))]

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        expect_rank(x, (4,), "an input [batch, channels, H, W]")
        c_in = concrete(x.shape[1], "channel axis")
        for what, n in (("input channels", c_in), ("out_channels", self.out_channels)):
            expect(n % self.groups == 0, f"{what} divisible by groups={self.groups}", str(n))
        k, s, p, op, d = self._geometry()
        spatial = []
        for i in range(2):
            # torch takes output_padding < max(stride, dilation); ONNX Runtime refuses it at stride 1 ("output_padding
            # (1) may be too large for stride (1)"): the exported model must run, so the rule is ORT's
            expect(op[i] < s[i], "output_padding smaller than stride (as ONNX Runtime requires)",
                   f"output_padding {self.output_padding} with stride {self.stride}")
            n = concrete(x.shape[2 + i], f"spatial axis {2 + i}")
            out = (n - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1
            expect(out >= 1, f"a positive output size on spatial axis {2 + i}",
                   f"{out} (padding {self.padding} crops too much of {n})")
            spatial.append(out)
        return x.with_shape((x.shape[0], self.out_channels, *spatial))

    def param_shapes(self, ins):
        k = self._geometry()[0]
        shapes = {"weight": (ins[0].shape[1], self.out_channels // self.groups, *k)}
        return shapes | ({"bias": (self.out_channels,)} if self.bias else {})

    def flops(self, ins, out, sizes):
        # every input element meets k_h * k_w * out_channels / groups weights
        return 2 * ins[0].numel(sizes) * math.prod(self._geometry()[0]) * (self.out_channels // self.groups)

    def to_torch(self, ins):
        from torch import nn
        k, s, p, op, d = self._geometry()
        return nn.ConvTranspose2d(ins[0].shape[1], self.out_channels, k, stride=s, padding=p, output_padding=op,
                                  groups=self.groups, bias=self.bias, dilation=d)

    def emit(self, e):
        k, s, p, op, d = self._geometry()
        return e.op("ConvTranspose", e.ins[0], e.param("weight"), e.param("bias") if self.bias else None,
                    kernel_shape=list(k), strides=list(s), pads=[*p, *p], output_padding=list(op), dilations=list(d),
                    group=self.groups)


@register
class Upsample(Op):
    """Upsample by an integer factor, nearest or bilinear: [batch, C, H, W] -> [batch, C, sH, sW].

    Nearest also takes [batch, C, L] -> [batch, C, sL].
    """

    op: Literal["upsample"] = "upsample"
    scale_factor: PosInt = Field(2, description="integer factor per spatial axis")
    mode: Literal["nearest", "bilinear"] = Field("nearest", description="'nearest' (repeat) or 'bilinear'")
    align_corners: bool = Field(False, description="bilinear only: corner pixels of input and output align")

    family = "conv"
    examples = (Example({}, ((3, 4, 5),)), Example({"mode": "bilinear"}, ((2, 3, 4),)),
                Example({"mode": "bilinear", "align_corners": True, "scale_factor": 3}, ((2, 3, 3),)),
                Example({"scale_factor": 3}, ((3, 5),)))

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        if self.mode == "bilinear":
            expect_rank(x, (4,), "an input [batch, C, H, W] for bilinear")
        else:
            expect_rank(x, (3, 4), "an input [batch, C, L] or [batch, C, H, W]")
            expect(not self.align_corners, "align_corners = false with mode nearest", "true",
                   hint="align_corners applies to bilinear only")
        spatial = (concrete(d, f"spatial axis {i + 2}") * self.scale_factor for i, d in enumerate(x.shape[2:]))
        return x.with_shape((*x.shape[:2], *spatial))

    def flops(self, ins, out, sizes):
        return (4 if self.mode == "bilinear" else 0) * out.numel(sizes)

    def to_torch(self, ins):
        from torch import nn
        return nn.Upsample(scale_factor=float(self.scale_factor), mode=self.mode,
                           align_corners=self.align_corners if self.mode == "bilinear" else None)

    def emit(self, e):
        """Resize by the factor: torch's nearest is ONNX's asymmetric floor; bilinear maps coordinates by half pixels
        (or corners)."""
        rank = e.types[0].rank
        scales = e.const([1.0, 1.0] + [float(self.scale_factor)] * (rank - 2))
        if self.mode == "nearest":
            return e.op("Resize", e.ins[0], None, scales, mode="nearest", nearest_mode="floor",
                        coordinate_transformation_mode="asymmetric")
        where = "align_corners" if self.align_corners else "pytorch_half_pixel"
        return e.op("Resize", e.ins[0], None, scales, mode="linear", coordinate_transformation_mode=where)


@register
class TimestepEmbedding(Op):
    """Sinusoidal embedding of diffusion timesteps (no parameters): [batch] or [batch, 1] -> [batch, dim].

    Features are cos(t f_i) then sin(t f_i), f_i = max_period^(-i / (dim // 2)), i < dim // 2.
    """

    op: Literal["timestep_embedding"] = "timestep_embedding"
    dim: int = Field(ge=2, description="output features (an odd dim gets one zero feature at the end)")
    max_period: float = Field(10000.0, gt=1, description="longest wavelength / 2pi")

    family = "embedding"
    examples = (Example({"dim": 8}, ((1,),)), Example({"dim": 7, "max_period": 100.0}, ((),)))

    def infer(self, ins):
        (t,) = ins
        expect_float(t, "timestep input")
        expect(t.batched and (t.rank == 1 or (t.rank == 2 and t.shape[1] == 1)),
               "timesteps [batch] or [batch, 1]", t.show())
        return t.with_shape((t.shape[0], self.dim))

    def flops(self, ins, out, sizes):
        return 3 * out.numel(sizes)

    def to_torch(self, ins):
        from archc.nn.unet import TimestepEmbedding as M
        return M(self.dim, self.max_period)

    def emit(self, e):
        import math

        import numpy as np
        half = self.dim // 2
        freqs = np.exp(np.float32(-math.log(self.max_period)) * np.arange(half, dtype=np.float32) / np.float32(half))
        t = e.ins[0] if e.types[0].rank == 2 else e.op("Unsqueeze", e.ins[0], e.ints(1))     # (B, 1)
        args = e.op("Mul", e.op("Cast", t, to=1), e.const(freqs.astype(np.float32)))          # (B, dim // 2)
        parts = [e.op("Cos", args), e.op("Sin", args)]
        if self.dim % 2:  # an odd dim: one zero feature at the end
            parts.append(e.op("Mul", e.op("Slice", args, e.ints(0), e.ints(1), e.ints(1)), e.scalar(0.0)))
        return e.op("Concat", *parts, axis=-1)                                                  # (B, dim)


def _vector_for(x: TensorType, v: TensorType, factor: int, what: str) -> None:
    """Check feature maps [batch, C, ...] and a per-example vector [batch, factor * C]."""
    expect_float(x, "first input (feature maps)")
    expect(x.rank >= 2 and x.batched, "feature maps [batch, C, ...] as the first input", x.show())
    c = concrete(x.shape[1], "channel axis")
    want = f"{factor} * {c} = {factor * c}" if factor > 1 else f"{c}"
    expect(v.dtype == "float32" and v.rank == 2 and v.batched and v.shape[1] == factor * c,
           f"a float32 {what} [batch, {want}] as the second input (the first has {c} channels)",
           f"{v.dtype} {v.show()}", hint=f"project it with a linear layer of out_features = {factor * c}")


@register
class AddChannels(Op):
    """Add a per-example vector at every position: [batch, C, H, W] and [batch, C] -> [batch, C, H, W]."""

    op: Literal["add_channels"] = "add_channels"

    family = "merge"
    arity = (2, 2)
    examples = (Example({}, ((4, 3, 3), (4,))), Example({}, ((3, 5), (3,))))

    def infer(self, ins):
        _vector_for(*ins, 1, "vector")
        return ins[0]

    def to_torch(self, ins):
        from archc.nn.unet import AddChannels as M
        return M(ins[0].rank - 2)

    def emit(self, e):
        x, v = e.ins
        return e.op("Add", x, _per_channel(e, v, e.types[0].rank - 2))


@register
class ScaleShift(Op):
    """FiLM / AdaGN conditioning x * (1 + scale) + shift: [batch, C, H, W] and [batch, 2C] -> [batch, C, H, W].

    The second input is [scale | shift], each C features, broadcast over every position.
    """

    op: Literal["scale_shift"] = "scale_shift"

    family = "merge"
    arity = (2, 2)
    examples = (Example({}, ((4, 3, 3), (8,))), Example({}, ((2, 6), (4,))))

    def infer(self, ins):
        _vector_for(*ins, 2, "[scale, shift] vector")
        return ins[0]

    def flops(self, ins, out, sizes):
        return 2 * out.numel(sizes)

    def to_torch(self, ins):
        from archc.nn.unet import ScaleShift as M
        return M(ins[0].shape[1], ins[0].rank - 2)

    def emit(self, e):
        x, v = e.ins
        c = e.types[0].shape[1]
        v = _per_channel(e, v, e.types[0].rank - 2)                                   # (B, 2C, 1, 1)
        scale = e.op("Slice", v, e.ints(0), e.ints(c), e.ints(1))
        shift = e.op("Slice", v, e.ints(c), e.ints(2 * c), e.ints(1))
        return e.op("Add", e.op("Mul", x, e.op("Add", e.scalar(1.0), scale)), shift)


def _per_channel(e, v, spatial: int):
    """(B, C) -> (B, C, 1, ...) with `spatial` trailing axes of 1, to broadcast over positions."""
    return v if spatial == 0 else e.op("Unsqueeze", v, e.ints(*range(2, 2 + spatial)))
