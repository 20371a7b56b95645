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
    (an all-pad row) attends to every key instead of producing NaN. With `bias_from`, the node it names is one
    more input, the last: a float [heads, T, S] or [batch, heads, T, S] added to the scaled scores.
    """

    op: Literal["attention"] = "attention"
    num_heads: PosInt = Field(description="heads (dim divisible by it)")
    num_kv_heads: PosInt | None = Field(
        None, description="key/value heads, shared by num_heads / num_kv_heads query heads each (grouped-query "
                          "attention; 1: multi-query); default num_heads")
    fused_qkv: bool = Field(False, description="one qkv_proj computing queries, keys and values (self-attention; "
                                               "rows q, k, v as torch's in_proj_weight)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on attention weights (training only)")
    bias: bool = Field(True, description="learn biases in the q/k/v/out projections (each of q_bias, k_bias, v_bias, "
                                         "out_bias that is not set)")
    q_bias: bool | None = Field(None, description="a bias in q_proj (default: bias); Qwen2: q, k, v only")
    k_bias: bool | None = Field(None, description="a bias in k_proj (default: bias); Whisper: false")
    v_bias: bool | None = Field(None, description="a bias in v_proj (default: bias)")
    out_bias: bool | None = Field(None, description="a bias in out_proj (default: bias)")
    scale: float | None = Field(None, gt=0, description="the factor on q k^T before softmax (T5: 1.0); default "
                                                        "1/sqrt(head size)")
    window: PosInt | None = Field(None, description="sliding-window causal attention (Mistral): a query at position p "
                                                    "attends to keys at p - window + 1 .. p; needs causal = true")
    bias_from: str | None = Field(None, description="id of a node whose float output [heads, T, S] or [batch, heads, "
                                                    "T, S] is added to the scores before softmax (each axis may be "
                                                    "1: broadcast): relative position bias, ALiBi, a custom mask")
    causal: bool = Field(False, description="a query attends only to keys at or before its position")
    rope: bool = Field(False, description="rotary position embedding on queries and keys (self-attention)")
    rope_base: float = Field(10000.0, gt=1, description="rotary frequency base")
    rope_dims: PosInt | None = Field(None, description="rotate only the first rope_dims features of each head "
                                                       "(partial rotary: GPT-NeoX, Phi); default the whole head")
    pad_index: int | None = Field(None, description="mask keys whose token (the last, int64 input) equals it")

    family = "attention"
    positions = "attention"
    reads = ("bias_from",)  # the score bias is the node's last input

    def mixes_positions(self) -> str:
        # a score bias (bias_from) is cached where its node is a position op (archc.export.kvcache checks the node)
        if not self.causal:
            return "attention is not causal (causal = false): every position reads later ones, so no KV cache"
        return ""

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
                        sizes={"seq": 5}),
                # a score bias per example [batch, heads, T, T]; one shared [heads, T, T] with causal and T5's scale
                Example({"num_heads": 2, "from": "x0", "bias_from": "x1"}, (("seq", 8), (2, "seq", "seq")),
                        sizes={"seq": 5}),
                Example({"num_heads": 2, "from": "x0", "bias_from": "x1", "causal": True, "scale": 1.0},
                        (("seq", 8), (2, "seq", "seq")), unbatched=(1,), sizes={"seq": 5}),
                Example({"num_heads": 2, "from": ["x0", "x1", "x2"], "bias_from": "x3", "pad_index": 0},
                        (("seq", 8), ("mem", 4), ("mem",), (1, "seq", "mem")), dtype=("float32", "float32", "int64",
                                                                                       "float32"),
                        unbatched=(3,), vocab=3, sizes={"seq": 4, "mem": 6}),
                # Mistral's sliding window (with grouped keys and RoPE; with pad tokens)
                Example({"num_heads": 4, "num_kv_heads": 2, "rope": True, "causal": True, "window": 3},
                        (("seq", 16),), sizes={"seq": 7}),
                Example({"num_heads": 2, "causal": True, "window": 2, "pad_index": 0}, (("seq", 8), ("seq",)),
                        dtype=("float32", "int64"), vocab=3, sizes={"seq": 6}),
                # per-projection biases: Qwen2's (q, k, v, no out), Whisper's (no k), a fused qkv without and out with
                Example({"num_heads": 4, "num_kv_heads": 2, "rope": True, "causal": True, "out_bias": False},
                        (("seq", 16),), sizes={"seq": 5}),
                Example({"num_heads": 2, "k_bias": False, "scale": 0.5}, (("seq", 8),), sizes={"seq": 5}),
                Example({"num_heads": 2, "fused_qkv": True, "bias": False, "out_bias": True, "causal": True},
                        (("seq", 8),), sizes={"seq": 5}))

    def _roles(self, ins: list[TensorType]) -> tuple[TensorType, TensorType | None, TensorType | None,
                                                      TensorType | None]:
        """(queries, memory or None for self-attention, tokens or None, score bias or None) after checking types."""
        rest = list(ins[1:])
        bias = rest.pop() if self.bias_from is not None and rest else None  # bias_from's node: the last input
        x, ins = ins[0], [ins[0], *rest]
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
        return x, memory, tokens, bias

    def _check_bias(self, bias: TensorType, t: Dim, s: Dim) -> None:
        """The score bias: float32 [heads, T, S] or [batch, heads, T, S], each axis equal or 1 (broadcast)."""
        what = f"the score bias (bias_from = '{self.bias_from}')"
        want = f"float32 [{self.num_heads}, {t}, {s}] or [batch, {self.num_heads}, {t}, {s}] (heads, queries, keys; " \
               f"any of them may be 1)"
        expect(bias.dtype == "float32", f"{what}: {want}", f"{bias.dtype} {bias.show()}")
        leading = bias.shape[:-3]
        expect(bias.rank in (3, 4) and (bias.batched if bias.rank == 4 else not bias.batched) or leading == (1,),
               f"{what}: {want}", bias.show(), hint="an op producing [heads, T, S] without the batch axis, or "
                                                    "[batch, heads, T, S]")
        for got, full, axis in zip(bias.shape[-3:], (self.num_heads, t, s), ("heads", "queries", "keys")):
            expect(got == 1 or got == full, f"{what}: {want}", f"{bias.show()} ({axis} axis {got}, not {full} or 1)")

    def infer(self, ins):
        x, memory, _, bias = self._roles(ins)
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
        expect(self.window is None or self.causal, "causal = true with window (sliding-window causal attention)",
               "causal = false", hint="a window bounds how far back a causal query reads")
        if self.fused_qkv:
            q, k, v = self.biases[:3]
            expect(q == k == v, "q_bias, k_bias and v_bias alike with fused_qkv (one qkv_proj, one bias)",
                   f"q_bias = {str(q).lower()}, k_bias = {str(k).lower()}, v_bias = {str(v).lower()}",
                   hint="set fused_qkv = false: q_proj, k_proj and v_proj then have a bias each or none")
        if bias is not None:
            self._check_bias(bias, x.shape[1], (memory or x).shape[1])
        return x

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def biases(self) -> tuple[bool, bool, bool, bool]:
        """Whether q_proj, k_proj, v_proj and out_proj have a bias (each defaults to `bias`)."""
        return tuple(self.bias if b is None else b for b in (self.q_bias, self.k_bias, self.v_bias,  # type: ignore
                                                             self.out_bias))

    def scratch(self, ins, size):
        x, memory, _, _ = self._roles(ins)
        return self.num_heads * size(x.shape[1]) * size((memory or x).shape[1])  # the scores (B, H, T, S)

    def param_shapes(self, ins):
        x, memory, _, _ = self._roles(ins)
        d, kd = x.shape[2], (memory or x).shape[2]
        kv = d // self.num_heads * self.kv_heads  # type: ignore[operator]  (keys and values: kv_heads heads)
        shapes: dict[str, tuple[int, ...]] = {}
        q, k, v, out = self.biases
        projections = (("q_proj", d, d, q), ("k_proj", kv, kd, k), ("v_proj", kv, kd, v), ("out_proj", d, d, out))
        if self.fused_qkv:
            projections = (("qkv_proj", d + 2 * kv, d, q), ("out_proj", d, d, out))  # type: ignore[assignment]
        for name, n_out, n_in, bias in projections:
            shapes[f"{name}.weight"] = (n_out, n_in)  # type: ignore[assignment]
            if bias:
                shapes[f"{name}.bias"] = (n_out,)  # type: ignore[assignment]
        return shapes

    def flops(self, ins, out, sizes):
        x, memory, _, _ = self._roles(ins)
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
        x, memory, _, _ = self._roles(ins)
        return M(x.shape[2], (memory or x).shape[2], self.num_heads, biases=self.biases,  # type: ignore[arg-type]
                 dropout=self.dropout, causal=self.causal, rope=self.rope, rope_base=self.rope_base,
                 rope_dims=self.rope_dims,
                 cross=memory is not None, pad_index=self.pad_index, num_kv_heads=self.kv_heads,
                 fused_qkv=self.fused_qkv, scale=self.scale, window=self.window,
                 score_bias=self.bias_from is not None)

    def emit(self, e):
        """Projections, heads, RoPE (ONNX's RotaryEmbedding, rotate-half), then ONNX's Attention (grouped keys, the causal,
        window or padding mask, the score bias), out_proj, as archc.nn.attention.Attention computes them. In the
        KV-cache graph (e.cache) the same, at positions past..past+new-1 after the cached keys and values."""
        x, memory, tokens, bias = _roles(e, self.pad_index is not None, self.bias_from is not None)
        d = e.types[0].shape[2] // self.num_heads
        qb, kb, vb, ob = self.biases
        if self.fused_qkv:
            kv = d * self.kv_heads
            q, k, v = e.ops("Split", e.linear(x, "qkv_proj", qb), e.ints(d * self.num_heads, kv, kv),
                            outputs=3, axis=-1)
        else:
            q, k, v = e.linear(x, "q_proj", qb), e.linear(memory, "k_proj", kb), e.linear(memory, "v_proj", vb)
        q = _heads(e, q, self.num_heads, d)                                                  # (B, H, T, d)
        k, v = _heads(e, k, self.kv_heads, d), _heads(e, v, self.kv_heads, d)                # (B, Hkv, S, d)
        if self.rope:
            q, k = _rope(e, x, q, k, self.rope_dims or d, d, self.rope_base)
        if bias is not None and e.types[-1].rank == 3:
            bias = e.op("Unsqueeze", bias, e.ints(0))                                        # (1, H, T, S)
        if e.cache is not None:
            y = self._cached(e, x, q, k, v, bias)
        else:
            y = self._attend(e, x, memory, tokens, q, k, v, bias)
        y = e.op("Reshape", e.op("Transpose", y, perm=[0, 2, 1, 3]), e.ints(0, 0, -1))       # (B, T, D)
        return e.linear(y, "out_proj", ob)

    def _attend(self, e, x, memory, tokens, q, k, v, bias):
        """ONNX's fused Attention (opset 23): grouped keys and values, the causal mask or a keep mask (boolean) or
        an additive one (float), softmax(q k^T * scale + mask) v in one node that ONNX Runtime runs as one kernel:
        (B, H, T, d)."""
        mask = None
        if tokens is not None or self.window is not None or (bias is not None and self.causal):
            mask = _keep(e, x, tokens, self.pad_index, self.causal, self.window)              # (B or 1, 1, T, S)
        if bias is not None:
            if mask is not None:
                bias = e.op("Where", mask, bias, e.scalar(float("-inf")))
            mask = bias
        if mask is not None:  # ONNX Runtime wants the mask's query and key axes full: (B, 1, 1, S) is expanded
            mask = e.op("Expand", mask, e.op("Concat", e.dims(mask, 0, 2), e.dims(x, 1, 2), e.dims(memory, 1, 2),
                                              axis=0))                                        # (B or 1, H or 1, T, S)
        return e.op("Attention", q, k, v, mask, is_causal=int(self.causal and mask is None), scale=self._scale)

    def _cached(self, e, x, q, k, v, bias):
        """The KV-cache graph's attention (causal self-attention, archc.export.kvcache): Attention's past_key and
        past_value before the new keys and values, present_key/present_value [B, Hkv, past + new, d] out. The
        causal (and window) mask is explicit, (1, 1, new, past + new), made once per window for every layer: the
        spec's is_causal aligns to the upper left, which a past would shift. A score bias (a position op's, at the
        same positions) is added where the mask keeps a key."""
        past_k, past_v = e.cache.take(e)
        mask = e.cache.once(("keep", self.window), lambda: _keep(e, x, None, None, True, self.window))
        if bias is not None:
            mask = e.op("Where", mask, bias, e.scalar(float("-inf")))                        # (1, H, new, past+new)
        y, present_k, present_v = e.ops("Attention", q, k, v, mask, past_k, past_v, outputs=3, scale=self._scale)
        e.cache.give(present_k, present_v)
        return y

    @property
    def _scale(self) -> float | None:
        return float(self.scale) if self.scale is not None else None


def _roles(e, tokens: bool, bias: bool):
    """(queries, memory (the queries for self-attention), tokens or None, score bias or None) of the emitted
    inputs."""
    ins = list(e.ins)
    score = ins.pop() if bias else None
    last = ins.pop() if tokens else None
    return ins[0], (ins[1] if len(ins) > 1 else ins[0]), last, score


def _heads(e, x, heads: int, d: int):
    """(B, T, heads * d) -> (B, heads, T, d)."""
    return e.op("Transpose", e.op("Reshape", x, e.ints(0, 0, heads, d)), perm=[0, 2, 1, 3])


def _rope(e, x, q, k, rotated: int, d: int, base: float):
    """Rotary embedding (rotate-half: interleaved = 0) on the first `rotated` features of each head of q and k
    (B, heads, T, d), at x's positions (0..T-1; past..past+new-1 in the KV-cache graph): ONNX's RotaryEmbedding
    (opset 23), fed cos and sin (B, T, rotated / 2) of the positions' angles, as archc.nn.attention computes them
    (ONNX Runtime wants the batch axis of those full)."""
    def tables():
        from archc.ops.embedding import inverse_frequencies, position_angles

        a = position_angles(e, x, inverse_frequencies(rotated, base))                   # (T, rotated / 2)
        shape = e.op("Concat", e.dims(x, 0, 2), e.ints(rotated // 2), axis=0)            # (B, T, rotated / 2)
        return e.op("Expand", e.op("Cos", a), shape), e.op("Expand", e.op("Sin", a), shape)

    cos, sin = tables() if e.cache is None else e.cache.once(("rope", rotated, base), tables)
    partial = rotated if rotated != d else None  # 0 (left out): the whole head
    return tuple(e.op("RotaryEmbedding", t, cos, sin, interleaved=0, rotary_embedding_dim=partial) for t in (q, k))


def _causal(e, x, window: int | None = None):
    """Boolean (T, S): query t may attend to keys 0..t (t - window + 1..t with a window); S = T, or past + new in
    the KV-cache graph (queries at past..past+new-1)."""
    t = e.positions(x)                                                                      # (T,)
    s = e.key_positions(x) if e.cache is not None else t                                    # (S,)
    keys, queries = e.op("Unsqueeze", s, e.ints(0)), e.op("Unsqueeze", t, e.ints(1))
    keep = e.op("LessOrEqual", keys, queries)
    if window is None:
        return keep
    return e.op("And", keep, e.op("Greater", keys, e.op("Sub", queries, e.scalar(window, "int64"))))


def _keep(e, x, tokens, pad_index: int | None, causal: bool, window: int | None = None):
    """Boolean (B or 1, 1, T, S): where a query may attend to a key; a query that would see no key (an all-pad
    row) sees every key, as the torch module does."""
    causal_keep = _causal(e, x, window) if causal else None                                 # (T, T)
    if tokens is None:
        return e.op("Unsqueeze", causal_keep, e.ints(0, 1))                                # (1, 1, T, T)
    keep = e.op("Not", e.op("Equal", tokens, e.scalar(pad_index, "int64")))
    keep = e.op("Unsqueeze", keep, e.ints(1, 2))                                           # (B, 1, 1, S)
    if causal_keep is not None:
        keep = e.op("And", keep, causal_keep)                                              # (B, 1, T, T)
    seen = e.op("ReduceMax", e.op("Cast", keep, to=1), e.ints(-1), keepdims=1)            # (B, 1, T, 1): 1.0 where any
    return e.op("Or", keep, e.op("Not", e.op("Cast", seen, to=9)))


def _size(d: Dim, sizes: dict[str, int]) -> int:
    return d if isinstance(d, int) else sizes.get(d, 1)
