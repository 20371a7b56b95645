"""Activations: element-wise ops usable as layers or as `act = "name"` sugar on any layer."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archc.ops.base import Example, Op, TensorType, expect, expect_float, norm_axis, register

_EXAMPLES = (Example({}, ((6,),)), Example({}, ((3, 4, 5),)))


class Activation(Op):
    """Base of element-wise activations: output type equals input type."""

    family = "activation"
    is_activation = True
    positions = "each"
    examples = _EXAMPLES
    torch_name: ClassVar[str] = ""  # the torch.nn class to lower to, with the op's attributes as keyword arguments
    flops_per_element: ClassVar[int] = 1  # FLOPs per output element (a comparison, a multiply, an exp ...)

    def infer(self, ins: list[TensorType]) -> TensorType:
        expect_float(ins[0])
        return ins[0]

    def flops(self, ins, out, sizes):
        return self.flops_per_element * out.numel(sizes)

    def torch_kwargs(self, ins: list[TensorType]) -> dict:
        return self.attrs()

    def to_torch(self, ins):
        from torch import nn
        return getattr(nn, self.torch_name)(**self.torch_kwargs(ins))


@register
class ReLU(Activation):
    """max(x, 0)."""

    op: Literal["relu"] = "relu"
    torch_name = "ReLU"


@register
class GELU(Activation):
    """Gaussian error linear unit (exact, or the tanh approximation)."""

    op: Literal["gelu"] = "gelu"
    approximate: Literal["none", "tanh"] = Field("none", description="'none' (erf) or 'tanh'")
    torch_name = "GELU"

    flops_per_element = 8


@register
class SiLU(Activation):
    """x * sigmoid(x) (swish)."""

    op: Literal["silu"] = "silu"
    torch_name = "SiLU"

    flops_per_element = 4


@register
class Sigmoid(Activation):
    """1 / (1 + exp(-x))."""

    op: Literal["sigmoid"] = "sigmoid"
    torch_name = "Sigmoid"

    flops_per_element = 3


@register
class Tanh(Activation):
    """Hyperbolic tangent."""

    op: Literal["tanh"] = "tanh"
    torch_name = "Tanh"

    flops_per_element = 3


@register
class LeakyReLU(Activation):
    """x for x >= 0, negative_slope * x otherwise."""

    op: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: float = Field(0.01, ge=0, description="slope for x < 0")
    torch_name = "LeakyReLU"


@register
class Identity(Activation):
    """Returns its input unchanged."""

    op: Literal["identity"] = "identity"
    torch_name = "Identity"

    flops_per_element = 0


@register
class Clamp(Activation):
    """min(max(x, min), max) as torch.clamp; either bound may be left out (not both)."""

    op: Literal["clamp"] = "clamp"
    min: float | None = Field(None, description="lower bound (none: unbounded below)")
    max: float | None = Field(None, description="upper bound (none: unbounded above)")
    examples = (Example({"min": -0.5, "max": 0.5}, ((6,),)), Example({"min": 0.0}, ((3, 4, 5),)),
                Example({"max": 0.3}, ((2, 7),)))

    def infer(self, ins: list[TensorType]) -> TensorType:
        expect(self.min is not None or self.max is not None, "min or max (or both)", "neither",
               hint='op = "clamp", min = 0.0, max = 6.0 is relu6')
        # torch.clamp with min > max returns max everywhere: almost surely a typo, so it is refused here
        expect(self.min is None or self.max is None or self.min <= self.max, "min <= max",
               f"min = {self.min}, max = {self.max}")
        return super().infer(ins)

    def to_torch(self, ins):
        from archc.nn.activation import Clamp as M
        return M(self.min, self.max)


@register
class ReLU6(Activation):
    """min(max(x, 0), 6)."""

    op: Literal["relu6"] = "relu6"
    torch_name = "ReLU6"


@register
class Hardtanh(Activation):
    """x clamped to [min_val, max_val] (default [-1, 1])."""

    op: Literal["hardtanh"] = "hardtanh"
    min_val: float = Field(-1.0, description="lower bound")
    max_val: float = Field(1.0, description="upper bound (> min_val)")
    examples = (*_EXAMPLES, Example({"min_val": -0.25, "max_val": 2.0}, ((3, 4),)))
    torch_name = "Hardtanh"

    def infer(self, ins: list[TensorType]) -> TensorType:
        expect(self.max_val > self.min_val, "max_val > min_val", f"min_val = {self.min_val}, max_val = {self.max_val}")
        return super().infer(ins)


@register
class Hardsigmoid(Activation):
    """relu6(x + 3) / 6, the piecewise-linear sigmoid."""

    op: Literal["hardsigmoid"] = "hardsigmoid"
    torch_name = "Hardsigmoid"

    flops_per_element = 3


@register
class Hardswish(Activation):
    """x * relu6(x + 3) / 6 (MobileNetV3)."""

    op: Literal["hardswish"] = "hardswish"
    torch_name = "Hardswish"

    flops_per_element = 4


class _AxisActivation(Activation):
    """Softmax-like activations along one axis (torch convention: the batch axis is 0)."""

    dim: int = Field(-1, description="axis, batch axis = 0; negative counts from the end")

    def infer(self, ins: list[TensorType]) -> TensorType:
        expect_float(ins[0])
        axis = norm_axis(self.dim, ins[0].rank)
        if axis == 0:
            from archc.errors import ShapeError
            raise ShapeError("expected dim to name a per-example axis, received 0 (the batch axis)")
        return ins[0]

    flops_per_element = 5

    def mixes_positions(self) -> str:
        return "" if self.dim == -1 else f"{self.name()} over axis {self.dim} mixes positions; a KV cache needs it " \
                                        f"on the last axis"


@register
class Softmax(_AxisActivation):
    """exp(x) / sum(exp(x)) along `dim`."""

    op: Literal["softmax"] = "softmax"
    torch_name = "Softmax"
    score_kind = "probs"


@register
class LogSoftmax(_AxisActivation):
    """log(softmax(x)) along `dim`, computed stably."""

    op: Literal["log_softmax"] = "log_softmax"
    torch_name = "LogSoftmax"
    score_kind = "log_probs"
