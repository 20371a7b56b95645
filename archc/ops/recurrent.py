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

    # ONNX's gate order as positions in torch's (LSTM: torch i, f, g, o -> ONNX i, o, f, c; GRU: r, z, n -> z, r, h)
    onnx_gates: ClassVar[tuple[int, ...]] = (0,)

    def onnx_attrs(self) -> dict:
        return {}

    def emit(self, e):
        """ONNX's RNN / LSTM / GRU, one node per layer over (T, B, features), the state_dict's weights reordered
        into ONNX's gate order in the graph (Split, Concat: ONNX Runtime folds them when it loads the file)."""
        h = self.hidden_size
        x = e.op("Transpose", e.ins[0], perm=[1, 0, 2])                                     # (T, B, F)
        states = []
        for layer in range(self.num_layers):
            w, r, b = (self._stacked(e, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias"))
            y, y_h = e.ops(self.module, x, w, r, b, outputs=2, hidden_size=h,
                           direction="bidirectional" if self.bidirectional else "forward", **self.onnx_attrs())
            states.append(y_h)                                                               # (D, B, H)
            x = e.op("Reshape", e.op("Transpose", y, perm=[0, 2, 1, 3]), e.ints(0, 0, -1))  # (T, B, D*H)
        if self.output == "sequence":
            return e.op("Transpose", x, perm=[1, 0, 2])                                      # (B, T, D*H)
        h_n = states[-1] if self.output == "last" else (
            states[0] if len(states) == 1 else e.op("Concat", *states, axis=0))              # (n, B, H)
        return e.op("Reshape", e.op("Transpose", h_n, perm=[1, 0, 2]), e.ints(0, -1))       # (B, n*H)

    def _stacked(self, e, name: str):
        """A layer's weight (both directions stacked: (D, G*H, in)) in ONNX's gate order; "bias_lN": B = [Wb, Rb]."""
        if name.startswith("bias") and not self.bias:
            return None
        parts = []
        for sfx in ("", "_reverse")[: self.dirs]:
            if name.startswith("bias"):
                layer = name.removeprefix("bias")
                t = e.op("Concat", self._reorder(e, e.param(f"bias_ih{layer}{sfx}")),
                         self._reorder(e, e.param(f"bias_hh{layer}{sfx}")), axis=0)
            else:
                t = self._reorder(e, e.param(f"{name}{sfx}"))
            parts.append(e.op("Unsqueeze", t, e.ints(0)))
        return parts[0] if len(parts) == 1 else e.op("Concat", *parts, axis=0)

    def _reorder(self, e, t):
        """Rows of torch's gates (G blocks of hidden_size) in ONNX's order."""
        if self.gates == 1:
            return t
        blocks = e.ops("Split", t, axis=0, num_outputs=self.gates, outputs=self.gates)
        return e.op("Concat", *(blocks[i] for i in self.onnx_gates), axis=0)


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

    def onnx_attrs(self) -> dict:
        return {"activations": ["Tanh" if self.nonlinearity == "tanh" else "Relu"] * self.dirs}


@register
class LSTM(_Recurrent):
    """Long short-term memory: [batch, seq, features] -> see `output`."""

    op: Literal["lstm"] = "lstm"

    gates = 4
    module = "LSTM"
    onnx_gates = (0, 3, 1, 2)
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
    onnx_gates = (1, 0, 2)

    def onnx_attrs(self) -> dict:  # torch's GRU applies the reset gate after the hidden matmul
        return {"linear_before_reset": 1}
    examples = (Example({"hidden_size": 6, "output": "last"}, (("seq", 4),), sizes={"seq": 5}),
                Example({"hidden_size": 4, "num_layers": 2, "bidirectional": True}, (("seq", 3),),
                        sizes={"seq": 6}))
