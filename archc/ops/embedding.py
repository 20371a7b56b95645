"""Embedding ops: token embedding, positional encodings (learned, sinusoidal), and weight tying: a second lookup in
one table, the tied output projection."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr

from archc.ops.base import (ID_PATTERN, AxisBound, Example, Op, PosInt, TensorType, ValueBound, base_axis,
                            concrete, expect, expect_float, expect_rank, register)


@register
class Embedding(Op):
    """Look up token ids in a learned table: int64 [batch, ...] -> float32 [batch, ..., embedding_dim]."""

    op: Literal["embedding"] = "embedding"
    num_embeddings: PosInt = Field(description="table rows (the vocabulary size)")
    embedding_dim: PosInt = Field(description="features per token")
    padding_idx: int | None = Field(None, description="a row kept at zero and not trained (e.g. the pad token)")

    family = "embedding"
    positions = "each"
    examples = (Example({"num_embeddings": 11, "embedding_dim": 4}, (("seq",),), dtype="int64", vocab=11,
                        sizes={"seq": 6}),
                Example({"num_embeddings": 7, "embedding_dim": 3, "padding_idx": 0}, ((2, 3),), dtype="int64",
                        vocab=7))

    def infer(self, ins):
        (x,) = ins
        expect(x.dtype == "int64", "int64 token ids", f"{x.dtype} {x.show()}",
               hint="embedding reads integer ids; declare the input with dtype = \"int64\"")
        n = self.num_embeddings
        if self.padding_idx is not None:
            expect(-n <= self.padding_idx < n, f"padding_idx in [{-n}, {n - 1}]", str(self.padding_idx))
        return TensorType((*x.shape, self.embedding_dim), "float32")

    def param_shapes(self, ins):
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def bounds(self, ins):
        n = self.num_embeddings
        return (ValueBound(0, n, f"num_embeddings = {n}, the table's rows",
                           hint="raise num_embeddings, or declare the input's vocab within it"),)

    def flops(self, ins, out, sizes):
        return 0  # a gather

    def to_torch(self, ins):
        from torch import nn
        return nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx)

    def emit(self, e):  # the padding row is zero in the table itself
        return e.op("Gather", e.param("weight"), e.ins[0], axis=0)


def _sequence(x: TensorType, what: str) -> int:
    """Check [batch, seq, dim] float32 and return the fixed feature size."""
    expect_float(x)
    expect_rank(x, (3,), f"{what} [batch, seq, features]")
    return concrete(x.shape[2], "feature axis")


@register
class PosEmbedding(Op):
    """Add a learned position table, sliced to the input's length: [batch, seq, dim] -> same (seq <= max_len)."""

    op: Literal["pos_embedding"] = "pos_embedding"
    max_len: PosInt = Field(description="longest sequence (table rows); a longer input fails at run time")

    family = "embedding"
    positions = "offset"
    examples = (Example({"max_len": 16}, (("seq", 4),), sizes={"seq": 6}), Example({"max_len": 5}, ((5, 3),)))

    def infer(self, ins):
        (x,) = ins
        _sequence(x, "an input")
        seq = x.shape[1]
        if isinstance(seq, int):
            expect(seq <= self.max_len, f"a sequence of at most max_len = {self.max_len} positions", str(seq))
        return x

    def param_shapes(self, ins):
        return {"weight": (self.max_len, ins[0].shape[2])}

    def bounds(self, ins):
        seq = ins[0].shape[1]
        if not isinstance(seq, str):
            return ()  # a fixed length is checked by infer
        return (AxisBound(seq, high=self.max_len, why=f"max_len = {self.max_len}, the position table's rows",
                          hint=f"raise max_len, or lower [axes] {base_axis(seq)}"),)

    def to_torch(self, ins):
        from archc.nn.embedding import PosEmbedding as M
        return M(self.max_len, ins[0].shape[2])

    def emit(self, e):  # rows 0..T-1 (past..past+new-1 in the KV-cache graph)
        x = e.ins[0]
        rows = e.op("Slice", e.param("weight"), *e.span(x), e.ints(0))                     # (T, D)
        return e.op("Add", x, rows)


@register
class SinusoidalPos(Op):
    """Add fixed sin/cos position features (no parameters): [batch, seq, dim] -> same."""

    op: Literal["sinusoidal_pos"] = "sinusoidal_pos"
    base: float = Field(10000.0, gt=1, description="longest wavelength / 2pi")

    family = "embedding"
    positions = "offset"
    examples = (Example({}, (("seq", 6),), sizes={"seq": 7}), Example({"base": 100.0}, ((4, 5),)))

    def infer(self, ins):
        _sequence(ins[0], "an input")
        return ins[0]

    def flops(self, ins, out, sizes):
        return 2 * out.numel(sizes)

    def to_torch(self, ins):
        from archc.nn.embedding import SinusoidalPos as M
        return M(ins[0].shape[2], self.base)

    def emit(self, e):
        x, dim = e.ins[0], e.types[0].shape[2]
        a = position_angles(e, x, inverse_frequencies(dim, self.base))                  # (T, ceil(D/2))
        pair = e.op("Concat", e.op("Unsqueeze", e.op("Sin", a), e.ints(-1)),
                    e.op("Unsqueeze", e.op("Cos", a), e.ints(-1)), axis=-1)             # (T, F, 2)
        table = e.op("Reshape", pair, e.ints(0, -1))                                     # (T, 2F): sin, cos interleaved
        if dim % 2:
            table = e.op("Slice", table, e.ints(0), e.ints(dim), e.ints(1))              # (T, D)
        return e.op("Add", x, table)


def inverse_frequencies(dim: int, base: float):
    """archc.nn.embedding.inverse_frequencies in numpy (float32 throughout, as torch computes it)."""
    import math

    import numpy as np
    return np.exp(np.arange(0, dim, 2, dtype=np.float32) * np.float32(-math.log(base) / dim)).astype(np.float32)


def position_angles(e, x, inv_freq):
    """Angles of x's positions (0..T-1, T its axis 1; past..past+new-1 in the KV-cache graph) x frequencies: (T, F),
    as archc.nn.embedding.rope_angles."""
    pos = e.op("Cast", e.positions(x), to=1)                                                    # (T,) float32
    return e.op("Mul", e.op("Unsqueeze", pos, e.ints(1)), e.const(inv_freq[None, :]))          # (T, F)


@register
class TiedEmbedding(Op):
    """Look up token ids in another embedding's table: int64 [batch, ...] -> float32 [batch, ..., its embedding_dim].

    One table, several inputs (T5's encoder and decoder ids)."""

    op: Literal["tied_embedding"] = "tied_embedding"
    tie: str = Field(pattern=ID_PATTERN, description="id of the embedding whose table this reads (its rows and width)")

    family = "embedding"
    positions = "each"
    ties = "tie"
    examples = (Example({"tie": "emb", "from": "x0"}, (("seq",),), dtype="int64", vocab=9, sizes={"seq": 5},
                        before=({"op": "embedding", "id": "emb", "num_embeddings": 9, "embedding_dim": 4},)),
                Example({"tie": "emb", "from": "x0"}, ((2, 3),), dtype="int64", vocab=7,
                        before=({"op": "embedding", "id": "emb", "num_embeddings": 7, "embedding_dim": 5,
                                 "padding_idx": 0},)))
    # The table's rows, learned from the tied node by infer_tied: bounds sees only the inputs.
    _rows: int | None = PrivateAttr(None)

    def infer_tied(self, ins, tied):
        (x,) = ins
        table = tied.get("weight")
        expect(table is not None and len(table) == 2, f"'{self.tie}' to have a weight table [rows, features]",
               f"parameters {dict(tied) or 'none'}", hint="tie to an embedding")
        expect(x.dtype == "int64", "int64 token ids", f"{x.dtype} {x.show()}",
               hint="tied_embedding reads integer ids; declare the input with dtype = \"int64\"")
        rows, dim = table  # type: ignore[misc]
        self._rows = rows
        return TensorType((*x.shape, dim), "float32")

    def bounds(self, ins):
        assert self._rows is not None, "infer_tied runs before bounds"
        n = self._rows
        return (ValueBound(0, n, f"num_embeddings = {n}, the rows of '{self.tie}'",
                           hint=f"raise the num_embeddings of '{self.tie}', or declare the input's vocab within it"),)

    def flops(self, ins, out, sizes):
        return 0  # a gather

    def to_torch_tied(self, ins, tied):
        from archc.nn.embedding import TiedEmbedding as M
        return M(tied)

    def emit(self, e):  # the table's one initializer, read by both lookups
        return e.op("Gather", e.tied("weight"), e.ins[0], axis=0)


@register
class TiedLinear(Op):
    """Project onto an embedding's table (weight tying): [..., dim] -> [..., num_embeddings]."""

    op: Literal["tied_linear"] = "tied_linear"
    tie: str = Field(pattern=ID_PATTERN, description="id of the embedding whose weight this reuses")
    bias: bool = Field(False, description="learn an additive bias (its own parameter)")

    family = "embedding"
    positions = "each"
    ties = "tie"
    examples = (Example({"tie": "emb"}, (("seq",),), dtype="int64", vocab=11, sizes={"seq": 5},
                        before=({"op": "embedding", "id": "emb", "num_embeddings": 11, "embedding_dim": 6},)),
                Example({"tie": "emb", "bias": True}, ((3,),), dtype="int64", vocab=9,
                        before=({"op": "embedding", "id": "emb", "num_embeddings": 9, "embedding_dim": 4},
                                {"op": "layernorm"})))
    # The vocabulary size, learned from the tied table by infer_tied: param_shapes sees only the inputs.
    _vocab: int | None = PrivateAttr(None)

    def infer_tied(self, ins, tied):
        (x,) = ins
        table = tied.get("weight")
        expect(table is not None and len(table) == 2, f"'{self.tie}' to have a weight table [rows, features]",
               f"parameters {dict(tied) or 'none'}", hint="tie to an embedding")
        rows, dim = table  # type: ignore[misc]
        expect_float(x)
        expect(x.rank >= 2 and x.shape[-1] == dim, f"an input [batch, ..., {dim}] (the features of '{self.tie}')",
               x.show())
        self._vocab = rows
        return x.with_shape(x.shape[:-1] + (rows,))

    def param_shapes(self, ins):
        assert self._vocab is not None, "infer_tied runs before param_shapes"
        return {"bias": (self._vocab,)} if self.bias else {}

    def flops(self, ins, out, sizes):
        return 2 * ins[0].numel(sizes) * out.shape[-1]

    def to_torch_tied(self, ins, tied):
        from archc.nn.embedding import TiedLinear as M
        return M(tied, self.bias)

    def emit(self, e):  # x @ E^T: the table's one initializer, read by both nodes
        y = e.op("MatMul", e.ins[0], e.op("Transpose", e.tied("weight"), perm=[1, 0]))
        return e.op("Add", y, e.param("bias")) if self.bias else y
