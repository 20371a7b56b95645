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
    onnx_name: ClassVar[str] = ""  # the ONNX op it emits as, with onnx_attrs() (or the class writes its own emit)
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

    def onnx_attrs(self) -> dict:
        return {}

    def emit(self, e):
        assert self.onnx_name, f"activation {self.name()}: set onnx_name or write emit"
        return e.op(self.onnx_name, e.ins[0], **self.onnx_attrs())


@register
class ReLU(Activation):
    """max(x, 0)."""

    op: Literal["relu"] = "relu"
    torch_name = "ReLU"
    onnx_name = "Relu"


@register
class GELU(Activation):
    """Gaussian error linear unit (exact, or the tanh approximation)."""

    op: Literal["gelu"] = "gelu"
    approximate: Literal["none", "tanh"] = Field("none", description="'none' (erf) or 'tanh'")
    torch_name = "GELU"
    onnx_name = "Gelu"  # opset 20's fused form (erf or tanh)

    def onnx_attrs(self):
        return {"approximate": self.approximate}

    flops_per_element = 8


@register
class SiLU(Activation):
    """x * sigmoid(x) (swish)."""

    op: Literal["silu"] = "silu"
    torch_name = "SiLU"

    def emit(self, e):  # opset 23 has no Swish (24 does): x * sigmoid(x), which ONNX Runtime fuses
        return e.op("Mul", e.ins[0], e.op("Sigmoid", e.ins[0]))

    flops_per_element = 4


@register
class Sigmoid(Activation):
    """1 / (1 + exp(-x))."""

    op: Literal["sigmoid"] = "sigmoid"
    torch_name = "Sigmoid"
    onnx_name = "Sigmoid"

    flops_per_element = 3


@register
class Tanh(Activation):
    """Hyperbolic tangent."""

    op: Literal["tanh"] = "tanh"
    torch_name = "Tanh"
    onnx_name = "Tanh"

    flops_per_element = 3


@register
class LeakyReLU(Activation):
    """x for x >= 0, negative_slope * x otherwise."""

    op: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: float = Field(0.01, ge=0, description="slope for x < 0")
    torch_name = "LeakyReLU"
    onnx_name = "LeakyRelu"

    def onnx_attrs(self):
        return {"alpha": self.negative_slope}


@register
class Identity(Activation):
    """Returns its input unchanged."""

    op: Literal["identity"] = "identity"
    torch_name = "Identity"

    def emit(self, e):
        return e.ins[0]

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

    def emit(self, e):
        return _clip(e, self.min, self.max)


def _clip(e, low: float | None, high: float | None):
    """Clip with optional bounds (an absent one is an empty input)."""
    return e.op("Clip", e.ins[0], None if low is None else e.scalar(low), None if high is None else e.scalar(high))


@register
class ReLU6(Activation):
    """min(max(x, 0), 6)."""

    op: Literal["relu6"] = "relu6"
    torch_name = "ReLU6"

    def emit(self, e):
        return _clip(e, 0.0, 6.0)


@register
class Hardtanh(Activation):
    """x clamped to [min_val, max_val] (default [-1, 1])."""

    op: Literal["hardtanh"] = "hardtanh"
    min_val: float = Field(-1.0, description="lower bound")
    max_val: float = Field(1.0, description="upper bound (> min_val)")
    examples = (*_EXAMPLES, Example({"min_val": -0.25, "max_val": 2.0}, ((3, 4),)))
    torch_name = "Hardtanh"

    def emit(self, e):
        return _clip(e, self.min_val, self.max_val)

    def infer(self, ins: list[TensorType]) -> TensorType:
        expect(self.max_val > self.min_val, "max_val > min_val", f"min_val = {self.min_val}, max_val = {self.max_val}")
        return super().infer(ins)


@register
class Hardsigmoid(Activation):
    """relu6(x + 3) / 6, the piecewise-linear sigmoid."""

    op: Literal["hardsigmoid"] = "hardsigmoid"
    torch_name = "Hardsigmoid"
    onnx_name = "HardSigmoid"

    def onnx_attrs(self):
        return {"alpha": 1 / 6, "beta": 0.5}

    flops_per_element = 3


@register
class Hardswish(Activation):
    """x * relu6(x + 3) / 6 (MobileNetV3)."""

    op: Literal["hardswish"] = "hardswish"
    torch_name = "Hardswish"
    onnx_name = "HardSwish"

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

    def onnx_attrs(self):
        return {"axis": self.dim}

    def mixes_positions(self) -> str:
        return "" if self.dim == -1 else f"{self.name()} over axis {self.dim} mixes positions; a KV cache needs it " \
                                        f"on the last axis"


@register
class Softmax(_AxisActivation):
    """exp(x) / sum(exp(x)) along `dim`."""

    op: Literal["softmax"] = "softmax"
    torch_name = "Softmax"
    onnx_name = "Softmax"
    score_kind = "probs"


@register
class LogSoftmax(_AxisActivation):
    """log(softmax(x)) along `dim`, computed stably."""

    op: Literal["log_softmax"] = "log_softmax"
    torch_name = "LogSoftmax"
    onnx_name = "LogSoftmax"
    score_kind = "log_probs"
