"""Recurrent ops over [batch, seq, features] (batch first): rnn, lstm, gru."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archc.ops.base import Example, Op, PosInt, concrete, expect, expect_float, expect_rank, register


class _Recurrent(Op):
    """Shared rule: a stack of (bi)directional recurrent layers; `output` picks what comes out."""

    hidden_size: PosInt = Field(description="features of the hidden state")
    num_layers: PosInt = Field(1, description="stacked layers")
    bidirectional: bool = Field(False, description="also run right to left; outputs are concatenated")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout between stacked layers (training only)")
    bias: bool = Field(True, description="learn input and hidden biases")
    output: Literal["sequence", "last", "state"] = Field(
        "sequence", description="sequence: [batch, seq, dirs*hidden]; last: the top layer's final states "
                                "[batch, dirs*hidden]; state: every layer's [batch, layers*dirs*hidden]")

    family = "recurrent"
    gates: ClassVar[int] = 1
    module: ClassVar[str] = ""

    @property
    def dirs(self) -> int:
        return 2 if self.bidirectional else 1

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        expect_rank(x, (3,), "an input [batch, seq, features]")
        concrete(x.shape[2], "feature axis")
        expect(self.dropout == 0 or self.num_layers > 1, "dropout = 0 with num_layers = 1",
               f"dropout = {self.dropout}", hint="dropout applies between stacked layers only")
        h = self.dirs * self.hidden_size
        if self.output == "sequence":
            return x.with_shape((*x.shape[:2], h))
        return x.with_shape((x.shape[0], h * (self.num_layers if self.output == "state" else 1)))

    def param_shapes(self, ins):
        g, h = self.gates * self.hidden_size, self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(self.num_layers):
            n_in = ins[0].shape[2] if layer == 0 else self.dirs * h
            for sfx in ("", "_reverse")[: self.dirs]:
                shapes[f"weight_ih_l{layer}{sfx}"] = (g, n_in)
                shapes[f"weight_hh_l{layer}{sfx}"] = (g, h)
                if self.bias:
                    shapes[f"bias_ih_l{layer}{sfx}"] = (g,)
                    shapes[f"bias_hh_l{layer}{sfx}"] = (g,)
        return shapes

    def flops(self, ins, out, sizes):
        x = ins[0]
        steps = x.shape[1] if isinstance(x.shape[1], int) else sizes.get(x.shape[1], 1)
        per_step = sum(2 * shape[0] * shape[1] for name, shape in self.param_shapes(ins).items()
                       if name.startswith("weight"))  # the input and hidden matmuls of every layer and direction
        return steps * per_step

    def torch_kwargs(self) -> dict:
        return {}

    def to_torch(self, ins):
        from archc.nn import recurrent
        cls = getattr(recurrent, self.module)
        return cls(ins[0].shape[2], self.hidden_size, num_layers=self.num_layers, bias=self.bias,
                   dropout=self.dropout, bidirectional=self.bidirectional, output=self.output, **self.torch_kwargs())


@register
class RNN(_Recurrent):
    """Elman RNN h' = act(W x + U h + b): [batch, seq, features] -> see `output`."""

    op: Literal["rnn"] = "rnn"
    nonlinearity: Literal["tanh", "relu"] = Field("tanh", description="the recurrence's activation")

    module = "RNN"
    examples = (Example({"hidden_size": 5}, (("seq", 3),), sizes={"seq": 6}),
                Example({"hidden_size": 4, "nonlinearity": "relu", "num_layers": 2, "output": "state"},
                        (("seq", 3),), sizes={"seq": 5}))

    def torch_kwargs(self) -> dict:
        return {"nonlinearity": self.nonlinearity}


@register
class LSTM(_Recurrent):
    """Long short-term memory: [batch, seq, features] -> see `output`."""

    op: Literal["lstm"] = "lstm"

    gates = 4
    module = "LSTM"
    examples = (Example({"hidden_size": 8}, (("seq", 5),), sizes={"seq": 6}),
                Example({"hidden_size": 4, "bidirectional": True, "output": "last"}, (("seq", 3),),
                        sizes={"seq": 7}),
                Example({"hidden_size": 3, "num_layers": 2, "bidirectional": True, "dropout": 0.2,
                         "output": "state"}, ((4, 2),)))


@register
class GRU(_Recurrent):
    """Gated recurrent unit: [batch, seq, features] -> see `output`."""

    op: Literal["gru"] = "gru"

    gates = 3
    module = "GRU"
    examples = (Example({"hidden_size": 6, "output": "last"}, (("seq", 4),), sizes={"seq": 5}),
                Example({"hidden_size": 4, "num_layers": 2, "bidirectional": True}, (("seq", 3),),
                        sizes={"seq": 6}))
