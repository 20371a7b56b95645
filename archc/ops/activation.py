"""Activations: element-wise ops usable as layers or as `act = "name"` sugar on any layer."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archc.ops.base import Example, Op, TensorType, expect_float, norm_axis, register

_EXAMPLES = (Example({}, ((6,),)), Example({}, ((3, 4, 5),)))


class Activation(Op):
    """Base of element-wise activations: output type equals input type."""

    family = "activation"
    is_activation = True
    examples = _EXAMPLES
    torch_name: ClassVar[str] = ""  # the torch.nn class to lower to, with the op's attributes as keyword arguments

    def infer(self, ins: list[TensorType]) -> TensorType:
        expect_float(ins[0])
        return ins[0]

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

    def flops(self, ins, out, sizes):
        return 8 * out.numel(sizes)


@register
class SiLU(Activation):
    """x * sigmoid(x) (swish)."""

    op: Literal["silu"] = "silu"
    torch_name = "SiLU"

    def flops(self, ins, out, sizes):
        return 4 * out.numel(sizes)


@register
class Sigmoid(Activation):
    """1 / (1 + exp(-x))."""

    op: Literal["sigmoid"] = "sigmoid"
    torch_name = "Sigmoid"

    def flops(self, ins, out, sizes):
        return 3 * out.numel(sizes)


@register
class Tanh(Activation):
    """Hyperbolic tangent."""

    op: Literal["tanh"] = "tanh"
    torch_name = "Tanh"

    def flops(self, ins, out, sizes):
        return 3 * out.numel(sizes)


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

    def flops(self, ins, out, sizes):
        return 0


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

    def flops(self, ins, out, sizes):
        return 5 * out.numel(sizes)


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
