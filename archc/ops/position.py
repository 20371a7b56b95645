"""Attention score biases from positions: T5's relative position buckets, ALiBi, Swin's 2-d relative table.

Each produces a float32 [heads, T, S] (no batch axis) that attention adds to its scores before softmax
(`bias_from = "<this node's id>"`); one node can serve every layer (T5 computes its bias once per stack).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from archc.ops.base import Example, Op, PosInt, TensorType, concrete, expect, expect_float, expect_rank, register

if TYPE_CHECKING:
    import numpy as np

MAX_DISTANCE = 1 << 16   # the bucket table holds one entry per distance up to max_distance
MAX_WINDOW = 1024        # Swin's index holds (Wh*Ww)^2 entries


def _sequence(t: TensorType, what: str) -> None:
    """A [batch, seq, ...] input whose axis 1 gives a length."""
    expect(t.batched and t.rank >= 2, f"{what} [batch, seq, ...] (its axis 1 is the length)", t.show())


# ---- T5 ------------------------------------------------------------------------------------------
def t5_buckets(num_buckets: int, max_distance: int, bidirectional: bool) -> "np.ndarray":
    """Bucket of each distance 0..max_distance (int64; longer distances take the last), as transformers'
    T5Attention._relative_position_bucket computes it in float32 (for |key - query| in the bidirectional
    form, max(query - key, 0) in the causal one; the bidirectional form adds num_buckets / 2 for keys after
    the query)."""
    import numpy as np

    buckets = num_buckets // 2 if bidirectional else num_buckets
    exact = buckets // 2
    n = np.arange(max_distance + 1, dtype=np.int64)
    ratio = np.maximum(n, exact).astype(np.float32) / np.float32(exact)   # max: no log(0) at the exact distances
    large = exact + (np.log(ratio) / np.float32(math.log(max_distance / exact))
                     * np.float32(buckets - exact)).astype(np.int64)
    return np.where(n < exact, n, np.minimum(large, buckets - 1))


@register
class RelativePositionBias(Op):
    """T5's relative position bias, bucketed key - query distances: [batch, T, ...] (+ [batch, S, ...]) -> [H, T, S].

    A learned table [num_buckets, num_heads] read at the bucket of each key - query distance. `from` one node:
    self-attention over its positions (T = S); two nodes: queries from the first, keys from the second. Exact
    buckets for short distances, logarithmic ones up to max_distance, one for all beyond."""

    op: Literal["relative_position_bias"] = "relative_position_bias"
    num_heads: PosInt = Field(description="heads (the table's columns; the attention's num_heads)")
    num_buckets: PosInt = Field(32, description="table rows (T5: relative_attention_num_buckets)")
    max_distance: PosInt = Field(128, le=MAX_DISTANCE,
                                 description="distances from here on share the last bucket (T5: "
                                             "relative_attention_max_distance)")
    bidirectional: bool = Field(True, description="true: keys before and after a query have buckets of their own "
                                                  "(T5's encoder); false: causal, keys after share bucket 0 (decoder)")

    family = "attention"
    positions = "bias"
    arity = (1, 2)
    examples = (Example({"num_heads": 2, "num_buckets": 8, "max_distance": 6}, (("seq", 4),), sizes={"seq": 9}),
                Example({"num_heads": 3, "num_buckets": 6, "max_distance": 5, "bidirectional": False},
                        (("seq", 4),), sizes={"seq": 8}),
                Example({"num_heads": 2}, (("seq", 4), ("mem", 3)), sizes={"seq": 5, "mem": 7}))

    def infer(self, ins):
        for k, t in enumerate(ins):
            _sequence(t, "queries" if k == 0 else "keys")
        buckets = self.num_buckets // 2 if self.bidirectional else self.num_buckets
        form = "num_buckets / 2 (bidirectional)" if self.bidirectional else "num_buckets (causal)"
        expect(buckets >= 2, f"at least 2 buckets for each side: num_buckets >= {4 if self.bidirectional else 2}",
               f"num_buckets = {self.num_buckets}")
        expect(self.max_distance > buckets // 2, f"max_distance above the exact buckets, half of {form} = "
               f"{buckets // 2}", f"max_distance = {self.max_distance}",
               hint="T5: num_buckets = 32, max_distance = 128")
        return TensorType((self.num_heads, ins[0].shape[1], ins[-1].shape[1]), "float32")

    def param_shapes(self, ins):
        return {"weight": (self.num_buckets, self.num_heads)}

    def flops(self, ins, out, sizes):
        return 0  # a gather

    def to_torch(self, ins):
        from archc.nn.position import RelativePositionBias as M
        table = t5_buckets(self.num_buckets, self.max_distance, self.bidirectional).tolist()
        return M(self.num_heads, self.num_buckets, self.bidirectional, table)

    def emit(self, e):
        x, y = e.ins[0], e.ins[-1]
        rel = _relative(e, x, y)                                                             # (T, S) int64
        table = e.const(t5_buckets(self.num_buckets, self.max_distance, self.bidirectional), "int64")
        zero, last = e.scalar(0, "int64"), e.scalar(self.max_distance, "int64")
        if self.bidirectional:
            half = e.scalar(self.num_buckets // 2, "int64")
            after = e.op("Mul", e.op("Cast", e.op("Greater", rel, zero), to=7), half)   # keys after: upper half
            bucket = e.op("Add", after, e.op("Gather", table, e.op("Clip", e.op("Abs", rel), zero, last), axis=0))
        else:
            bucket = e.op("Gather", table, e.op("Clip", e.op("Neg", rel), zero, last), axis=0)
        values = e.op("Gather", e.param("weight"), bucket, axis=0)                          # (T, S, H)
        return e.op("Transpose", values, perm=[2, 0, 1])                                     # (H, T, S)


def _relative(e, x, y):
    """Key position minus query position: (T, S) int64, T = axis 1 of x, S = of y. In the KV-cache graph the
    queries sit at past..past+new-1 and the keys at 0..past+new-1 (the cached ones, then the new)."""
    return e.op("Sub", e.op("Unsqueeze", e.key_positions(y), e.ints(0)), e.op("Unsqueeze", e.positions(x), e.ints(1)))


# ---- ALiBi ---------------------------------------------------------------------------------------
def alibi_slopes(num_heads: int) -> list[float]:
    """The heads' slopes (Press et al. 2022; transformers' build_alibi_tensor for BLOOM): 2^(-8h/n) for h = 1..n
    when n is a power of 2; otherwise those of the power of 2 below, then every other one of twice that."""
    low = 2 ** math.floor(math.log2(num_heads))
    slopes = [2 ** (-8 * h / low) for h in range(1, low + 1)]
    return slopes + [2 ** (-4 * h / low) for h in range(1, 2 * (num_heads - low), 2)]


@register
class Alibi(Op):
    """ALiBi (Press et al. 2022), slope_h * (key - query position), no parameters: [batch, T, ...] -> [heads, T, T].

    The causal form: a key h steps back costs slope * h; keys after the query get positive values, which causal
    attention masks. BLOOM adds slope * key position instead: per query row that differs by a constant, which
    softmax ignores, so attention outputs are the same."""

    op: Literal["alibi"] = "alibi"
    num_heads: PosInt = Field(description="heads (the attention's num_heads)")

    family = "attention"
    positions = "bias"
    examples = (Example({"num_heads": 4}, (("seq", 3),), sizes={"seq": 6}), Example({"num_heads": 6}, ((5, 2),)))

    def infer(self, ins):
        _sequence(ins[0], "an input")
        return TensorType((self.num_heads, ins[0].shape[1], ins[0].shape[1]), "float32")

    def to_torch(self, ins):
        from archc.nn.position import Alibi as M
        return M(alibi_slopes(self.num_heads))

    def emit(self, e):
        import numpy as np

        x = e.ins[0]
        slopes = e.const(np.asarray(alibi_slopes(self.num_heads), np.float32)[:, None, None])  # (H, 1, 1)
        return e.op("Mul", slopes, e.op("Unsqueeze", e.op("Cast", _relative(e, x, x), to=1), e.ints(0)))


# ---- Swin ----------------------------------------------------------------------------------------
def swin_index(height: int, width: int) -> "np.ndarray":
    """Swin's relative_position_index (Liu et al. 2021): (N, N) int64, N = height * width, the table row of each
    (query, key) pair of a window's positions (row-major), from their offsets (dy, dx)."""
    import numpy as np

    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = np.stack((ys.ravel(), xs.ravel()))                                # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]                             # (2, N, N)
    return (rel[0] + height - 1) * (2 * width - 1) + rel[1] + width - 1


@register
class RelativePositionBias2d(Op):
    """Swin's 2-d relative position bias: windows [batch, Wh*Ww, ...] -> [heads, Wh*Ww, Wh*Ww].

    A learned table [(2Wh-1)(2Ww-1), num_heads] read at each pair of a window's positions (Swin's
    relative_position_index)."""

    op: Literal["relative_position_bias_2d"] = "relative_position_bias_2d"
    num_heads: PosInt = Field(description="heads (the table's columns; the attention's num_heads)")
    window_size: PosInt | list[PosInt] = Field(description="the window (Wh, Ww), or one int for a square one; the "
                                                           "input's axis 1 holds its Wh*Ww positions, row-major")

    family = "attention"
    examples = (Example({"num_heads": 2, "window_size": 3}, ((9, 4),)),
                Example({"num_heads": 3, "window_size": [2, 3]}, ((6, 5),)))

    @property
    def window(self) -> tuple[int, int]:
        w = self.window_size
        return (w, w) if isinstance(w, int) else (w[0], w[-1])

    def infer(self, ins):
        (x,) = ins
        w = self.window_size
        expect(isinstance(w, int) or len(w) == 2, "window_size as one int or [Wh, Ww]", str(w))
        h, wd = self.window
        expect(h * wd <= MAX_WINDOW, f"a window of at most {MAX_WINDOW} positions", f"{h} x {wd} = {h * wd}")
        expect_float(x)
        expect_rank(x, (3,), "windows [batch, positions, features]")
        n = concrete(x.shape[1], "window length (axis 1)")
        expect(n == h * wd, f"windows of Wh*Ww = {h * wd} positions (window_size {h} x {wd})", x.show(),
               hint="partition the feature map into windows first, one per example")
        return TensorType((self.num_heads, n, n), "float32")

    def param_shapes(self, ins):
        h, w = self.window
        return {"relative_position_bias_table": ((2 * h - 1) * (2 * w - 1), self.num_heads)}

    def flops(self, ins, out, sizes):
        return 0  # a gather

    def to_torch(self, ins):
        from archc.nn.position import RelativePositionBias2d as M
        h, w = self.window
        return M(self.num_heads, (2 * h - 1) * (2 * w - 1), swin_index(h, w).tolist())

    def emit(self, e):
        n = e.dims(e.ins[0], 1, 2)                     # N: read from the input, as the torch module does
        index = e.op("Slice", e.const(swin_index(*self.window), "int64"), e.ints(0, 0), e.op("Concat", n, n, axis=0),
                     e.ints(0, 1))                                                          # (N, N)
        values = e.op("Gather", e.param("relative_position_bias_table"), index, axis=0)     # (N, N, H)
        return e.op("Transpose", values, perm=[2, 0, 1])                                    # (H, N, N)
