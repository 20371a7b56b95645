"""Attention ops: multi-head (self or cross) attention over [batch, seq, dim]."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from archc.ops.base import Dim, Example, Op, PosInt, TensorType, concrete, expect, expect_rank, register


@register
class Attention(Op):
    """Multi-head attention (scaled dot product): [batch, T, dim] (+ memory, + tokens) -> [batch, T, dim].

    Inputs, in order: the queries x [batch, T, dim]; then, for cross-attention, a float32 memory
    [batch, S, kdim] giving keys and values; then, when `pad_index` is set, int64 tokens [batch, S]
    aligned with the keys (x's tokens for self-attention, the memory's for cross-attention): keys whose
    token equals pad_index are masked. So `from = ["x", "tokens"]` is masked self-attention and
    `from = ["x", "memory", "memory_tokens"]` masked cross-attention. A query that sees no key at all
    (an all-pad row) attends to every key instead of producing NaN.
    """

    op: Literal["attention"] = "attention"
    num_heads: PosInt = Field(description="heads (dim divisible by it)")
    num_kv_heads: PosInt | None = Field(
        None, description="key/value heads, shared by num_heads / num_kv_heads query heads each (grouped-query "
                          "attention; 1: multi-query); default num_heads")
    fused_qkv: bool = Field(False, description="one qkv_proj computing queries, keys and values (self-attention; "
                                               "rows q, k, v as torch's in_proj_weight)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on attention weights (training only)")
    bias: bool = Field(True, description="learn biases in the q/k/v/out projections")
    causal: bool = Field(False, description="a query attends only to keys at or before its position")
    rope: bool = Field(False, description="rotary position embedding on queries and keys (self-attention)")
    rope_base: float = Field(10000.0, gt=1, description="rotary frequency base")
    rope_dims: PosInt | None = Field(None, description="rotate only the first rope_dims features of each head "
                                                       "(partial rotary: GPT-NeoX, Phi); default the whole head")
    pad_index: int | None = Field(None, description="mask keys whose token (the last, int64 input) equals it")

    family = "attention"
    positions = "attention"

    def mixes_positions(self) -> str:
        return "" if self.causal else "attention is not causal (causal = false): every position reads later ones, " \
                                      "so no KV cache"
    arity = (1, 3)
    examples = (Example({"num_heads": 2, "causal": True}, (("seq", 8),), sizes={"seq": 6}),
                Example({"num_heads": 2, "rope": True, "pad_index": 0, "causal": True}, (("seq", 8), ("seq",)),
                        dtype=("float32", "int64"), vocab=3, sizes={"seq": 5}),
                Example({"num_heads": 3, "pad_index": 0, "bias": False}, (("seq", 6), ("mem", 4), ("mem",)),
                        dtype=("float32", "float32", "int64"), vocab=3, sizes={"seq": 4, "mem": 7}),
                Example({"num_heads": 4, "num_kv_heads": 2, "rope": True, "causal": True, "bias": False},
                        (("seq", 16),), sizes={"seq": 5}),
                Example({"num_heads": 3, "num_kv_heads": 1}, (("seq", 6), ("mem", 4)), sizes={"seq": 3, "mem": 4}),
                Example({"num_heads": 4, "num_kv_heads": 2, "fused_qkv": True, "causal": True}, (("seq", 8),),
                        sizes={"seq": 5}),
                Example({"num_heads": 2, "rope": True, "rope_dims": 4, "causal": True}, (("seq", 12),),
                        sizes={"seq": 5}))

    def _roles(self, ins: list[TensorType]) -> tuple[TensorType, TensorType | None, TensorType | None]:
        """(queries, memory or None for self-attention, tokens or None) after checking types."""
        x, rest = ins[0], list(ins[1:])
        tokens = None
        if self.pad_index is not None:
            expect(bool(rest) and rest[-1].dtype == "int64", "an int64 token input last (pad_index is set)",
                   ", ".join(f"{t.dtype} {t.show()}" for t in ins), hint='from = ["x", "tokens"]')
            tokens = rest.pop()
        expect(len(rest) <= 1, "at most one memory input (and a token input when pad_index is set)",
               f"{len(ins)} inputs", hint="set pad_index to use an int64 token input as a padding mask")
        memory = rest[0] if rest else None
        for t, what in ((x, "queries"), (memory or x, "memory")):
            expect(t.dtype == "float32", f"float32 {what} [batch, seq, dim]", f"{t.dtype} {t.show()}",
                   hint="an int64 input here needs pad_index (a mask) or an embedding first")
            expect_rank(t, (3,), f"{what} [batch, seq, dim]")
            concrete(t.shape[2], f"feature axis of the {what}")
        if tokens is not None:
            keys = (memory or x).shape[:2]
            expect(tokens.shape == keys, f"tokens [{', '.join(map(str, keys))}] (one per key)", tokens.show())
        return x, memory, tokens

    def infer(self, ins):
        x, memory, _ = self._roles(ins)
        dim = x.shape[2]
        expect(dim % self.num_heads == 0, f"features divisible by num_heads = {self.num_heads}", str(dim))
        if memory is not None:
            expect(not self.causal, "causal = false for cross-attention", "causal = true",
                   hint="causal masking is for self-attention over one sequence")
            expect(not self.rope, "rope = false for cross-attention", "rope = true",
                   hint="queries and memory have unrelated positions")
            expect(not self.fused_qkv, "fused_qkv = false for cross-attention", "fused_qkv = true",
                   hint="keys and values come from the memory, queries from x: one projection cannot make both")
        if self.rope:
            rotated = self.rope_dims or dim // self.num_heads
            expect(rotated % 2 == 0 and rotated <= dim // self.num_heads,
                   f"an even number of rotated features, at most the head size {dim // self.num_heads}",
                   f"rope_dims = {rotated}" if self.rope_dims else f"head size {rotated}")
        expect(self.rope or self.rope_dims is None, "rope = true with rope_dims", "rope = false")
        expect(self.num_heads % self.kv_heads == 0, f"num_heads = {self.num_heads} divisible by num_kv_heads",
               str(self.kv_heads))
        return x

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    def scratch(self, ins, size):
        x, memory, _ = self._roles(ins)
        return self.num_heads * size(x.shape[1]) * size((memory or x).shape[1])  # the scores (B, H, T, S)

    def param_shapes(self, ins):
        x, memory, _ = self._roles(ins)
        d, kd = x.shape[2], (memory or x).shape[2]
        kv = d // self.num_heads * self.kv_heads  # type: ignore[operator]  (keys and values: kv_heads heads)
        shapes: dict[str, tuple[int, ...]] = {}
        projections = (("q_proj", d, d), ("k_proj", kv, kd), ("v_proj", kv, kd), ("out_proj", d, d))
        if self.fused_qkv:
            projections = (("qkv_proj", d + 2 * kv, d), ("out_proj", d, d))  # type: ignore[assignment]
        for name, n_out, n_in in projections:
            shapes[f"{name}.weight"] = (n_out, n_in)  # type: ignore[assignment]
            if self.bias:
                shapes[f"{name}.bias"] = (n_out,)  # type: ignore[assignment]
        return shapes

    def flops(self, ins, out, sizes):
        x, memory, _ = self._roles(ins)
        memory = memory or x
        t, s = _size(x.shape[1], sizes), _size(memory.shape[1], sizes)
        d, kd = x.shape[2], memory.shape[2]
        kv = d // self.num_heads * self.kv_heads  # type: ignore[operator]
        projections = 2 * t * d * d * 2 + 2 * s * kd * kv * 2  # q, out; k, v
        return projections + 2 * 2 * t * s * d  # q k^T and weights @ v  # type: ignore[operator]

    def linear_parts(self):
        return ("qkv_proj", "out_proj") if self.fused_qkv else ("q_proj", "k_proj", "v_proj", "out_proj")

    def to_torch(self, ins):
        from archc.nn.attention import Attention as M
        x, memory, _ = self._roles(ins)
        return M(x.shape[2], (memory or x).shape[2], self.num_heads, bias=self.bias,  # type: ignore[arg-type]
                 dropout=self.dropout, causal=self.causal, rope=self.rope, rope_base=self.rope_base,
                 rope_dims=self.rope_dims,
                 cross=memory is not None, pad_index=self.pad_index, num_kv_heads=self.kv_heads,
                 fused_qkv=self.fused_qkv)


    def emit(self, e):
        """Projections, heads, RoPE (rotate-half, written out), then ONNX's Attention (grouped keys, causal or
        padding mask), out_proj, as archc.nn.attention.Attention computes them."""
        x, memory, tokens = _roles(e, self.pad_index is not None)
        d = e.types[0].shape[2] // self.num_heads
        if self.fused_qkv:
            kv = d * self.kv_heads
            q, k, v = e.ops("Split", e.linear(x, "qkv_proj", self.bias), e.ints(d * self.num_heads, kv, kv),
                            outputs=3, axis=-1)
        else:
            q, k, v = (e.linear(x, "q_proj", self.bias), e.linear(memory, "k_proj", self.bias),
                       e.linear(memory, "v_proj", self.bias))
        q = _heads(e, q, self.num_heads, d)                                                  # (B, H, T, d)
        k, v = _heads(e, k, self.kv_heads, d), _heads(e, v, self.kv_heads, d)                # (B, Hkv, S, d)
        if self.rope:
            q, k = _rope(e, x, q, k, self.rope_dims or d, d, self.rope_base)
        # ONNX's fused Attention (opset 23): grouped keys and values, the causal mask or a boolean keep mask, and
        # softmax(q k^T / sqrt(d)) v in one node that ONNX Runtime runs as one kernel
        keep = None
        if tokens is not None:  # ONNX Runtime wants the mask's query axis full: (B, 1, 1, S) is expanded
            keep = _keep(e, x, tokens, self.pad_index, self.causal)                           # (B, 1, T or 1, S)
            keep = e.op("Expand", keep, e.op("Concat", e.dims(keep, 0, 2), e.dims(x, 1, 2), e.dims(keep, 3),
                                              axis=0))                                        # (B, 1, T, S)
        y = e.op("Attention", q, k, v, keep, is_causal=int(self.causal and keep is None))    # (B, H, T, d)
        y = e.op("Reshape", e.op("Transpose", y, perm=[0, 2, 1, 3]), e.ints(0, 0, -1))       # (B, T, D)
        return e.linear(y, "out_proj", self.bias)


def _roles(e, tokens: bool):
    """(queries, memory (the queries for self-attention), tokens or None) of the emitted inputs."""
    ins = list(e.ins)
    last = ins.pop() if tokens else None
    return ins[0], (ins[1] if len(ins) > 1 else ins[0]), last


def _heads(e, x, heads: int, d: int):
    """(B, T, heads * d) -> (B, heads, T, d)."""
    return e.op("Transpose", e.op("Reshape", x, e.ints(0, 0, heads, d)), perm=[0, 2, 1, 3])


def _rope(e, x, q, k, rotated: int, d: int, base: float):
    """Rotary embedding (rotate-half) on the first `rotated` features of each head of q and k, positions 0..T-1."""
    from archc.ops.embedding import inverse_frequencies, position_angles

    a = position_angles(e, x, inverse_frequencies(rotated, base))                       # (T, rotated / 2)
    a = e.op("Concat", a, a, axis=-1)                                                    # (T, rotated)
    cos, sin = e.op("Cos", a), e.op("Sin", a)
    return _rotate(e, q, cos, sin, rotated, d), _rotate(e, k, cos, sin, rotated, d)


def _rotate(e, x, cos, sin, rotated: int, d: int):
    """x * cos + rotate_half(x) * sin on features [0, rotated), the rest passed on: (B, H, T, d)."""
    half = rotated // 2
    part = x if rotated == d else e.op("Slice", x, e.ints(0), e.ints(rotated), e.ints(-1))
    x1 = e.op("Slice", part, e.ints(0), e.ints(half), e.ints(-1))
    x2 = e.op("Slice", part, e.ints(half), e.ints(rotated), e.ints(-1))
    turned = e.op("Concat", e.op("Neg", x2), x1, axis=-1)
    out = e.op("Add", e.op("Mul", part, cos), e.op("Mul", turned, sin))
    if rotated == d:
        return out
    return e.op("Concat", out, e.op("Slice", x, e.ints(rotated), e.ints(d), e.ints(-1)), axis=-1)


def _causal(e, x):
    """Boolean (T, T): query t may attend to keys 0..t."""
    length = e.op("Squeeze", e.dims(x, 1, 2), e.ints(0))
    t = e.op("Range", e.scalar(0, "int64"), length, e.scalar(1, "int64"))                   # (T,)
    return e.op("LessOrEqual", e.op("Unsqueeze", t, e.ints(0)), e.op("Unsqueeze", t, e.ints(1)))


def _keep(e, x, tokens, pad_index: int | None, causal: bool):
    """Boolean (B or 1, 1, T, S): where a query may attend to a key (None: everywhere); a query that would see no
    key (an all-pad row) sees every key, as the torch module does."""
    causal_keep = _causal(e, x) if causal else None                                         # (T, T)
    if tokens is None:
        return causal_keep
    keep = e.op("Not", e.op("Equal", tokens, e.scalar(pad_index, "int64")))
    keep = e.op("Unsqueeze", keep, e.ints(1, 2))                                           # (B, 1, 1, S)
    if causal_keep is not None:
        keep = e.op("And", keep, causal_keep)                                              # (B, 1, T, T)
    seen = e.op("ReduceMax", e.op("Cast", keep, to=1), e.ints(-1), keepdims=1)            # (B, 1, T, 1): 1.0 where any
    return e.op("Or", keep, e.op("Not", e.op("Cast", seen, to=9)))


def _size(d: Dim, sizes: dict[str, int]) -> int:
    return d if isinstance(d, int) else sizes.get(d, 1)
