"""Torch modules of the sequence ops (embeddings, recurrent, attention, pooling); every one exports to
ONNX with a dynamic batch and dynamic symbolic axes (sizes are read from tensors, never baked in)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ---- positions -----------------------------------------------------------------------------------
class PosEmbedding(nn.Module):
    """Add a learned table sliced to the current length: (B, T, D) -> (B, T, D), T <= max_len."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.shape[1]]  # (B, T, D) + (T, D)


def _angles(length: int | torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Position x frequency angles: (T, F) for positions 0..T-1 (T may be a traced size)."""
    pos = torch.arange(length, device=inv_freq.device).to(inv_freq.dtype)
    return pos[:, None] * inv_freq[None, :]  # (T, F)


def _inv_freq(dim: int, base: float) -> torch.Tensor:
    return torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))  # (ceil(dim/2),)


class SinusoidalPos(nn.Module):
    """Add the fixed sin/cos table of 'Attention is all you need' (even features sin, odd cos)."""

    def __init__(self, dim: int, base: float) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("inv_freq", _inv_freq(dim, base), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = _angles(x.shape[1], self.inv_freq)                              # (T, ceil(D/2))
        pe = torch.stack((a.sin(), a.cos()), dim=-1).flatten(1)[:, : self.dim]  # (T, D): sin, cos interleaved
        return x + pe.to(x.dtype)


# ---- normalization -------------------------------------------------------------------------------
class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm written out (opset 18 has no RMSNormalization, and the exporter no aten::rms_norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # type: ignore[operator]
        return y * self.weight if self.weight is not None else y


# ---- weight tying --------------------------------------------------------------------------------
class TiedLinear(nn.Module):
    """x @ E^T (+ bias) with E another module's weight: (..., D) -> (..., V).

    The tied module is kept in a plain list, not registered: its parameters stay counted (and saved) once.
    """

    def __init__(self, tied: nn.Module, bias: bool) -> None:
        super().__init__()
        self._tied = [tied]
        vocab, dim = tied.weight.shape
        # A tied table is also the output projection: nn.Embedding's N(0, 1) rows would give logits of size
        # ~dim at the start (initial loss ~10x ln(vocab)); N(0, 1/dim), a linear layer's scale, gives O(1).
        with torch.no_grad():
            tied.weight.mul_(dim ** -0.5)
        self.bias = nn.Parameter(torch.zeros(vocab)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self._tied[0].weight                                       # (V, D)
        # 2-D F.linear with a bias exports as Gemm(transB=1); any other form exports as MatMul of the
        # transposed weight, which constant folding would store as a second copy of the table in the file
        bias = self.bias if self.bias is not None else weight.new_zeros(weight.shape[0])
        y = F.linear(x.reshape(-1, x.shape[-1]), weight, bias)              # (N, V)
        return y.reshape(*x.shape[:-1], weight.shape[0])                    # (..., V)


# ---- recurrent -----------------------------------------------------------------------------------
class _Recurrent:
    """Mixin over nn.RNN/LSTM/GRU (batch_first) choosing the output: the sequence, the last state, or all."""

    def __init__(self, *args, output: str, **kwargs) -> None:
        super().__init__(*args, batch_first=True, **kwargs)  # type: ignore[call-arg]
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, h = super().forward(x)  # type: ignore[misc]  # y (B, T, dirs*H), h (layers*dirs, B, H)
        if self.output == "sequence":
            return y
        if isinstance(h, tuple):   # LSTM: (h_n, c_n)
            h = h[0]
        if self.output == "last":  # the top layer: forward's last step and backward's final state
            h = h[-(2 if self.bidirectional else 1):]  # type: ignore[attr-defined]
        return h.transpose(0, 1).flatten(1)  # (B, n*H)


class RNN(_Recurrent, nn.RNN):
    """Elman RNN choosing its output."""


class LSTM(_Recurrent, nn.LSTM):
    """LSTM choosing its output."""


class GRU(_Recurrent, nn.GRU):
    """GRU choosing its output."""


# ---- attention -----------------------------------------------------------------------------------
def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half form: (B, H, T, d) with cos/sin (T, d)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    """Multi-head attention: inputs (x, [memory], [tokens]) -> (B, T, D) via scaled_dot_product_attention."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, *, bias: bool, dropout: float, causal: bool,
                 rope: bool, rope_base: float, cross: bool, pad_index: int | None) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.num_heads, self.dropout, self.causal, self.rope = num_heads, dropout, causal, rope
        self.cross, self.pad_index = cross, pad_index
        if rope:
            self.register_buffer("inv_freq", _inv_freq(dim // num_heads, rope_base), persistent=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, T, D) -> (B, H, T, d)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        memory = rest[0] if self.cross else x                                # (B, S, Dkv)
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))
        if self.rope:  # self-attention only: queries and keys share positions 0..T-1
            a = _angles(x.shape[1], self.inv_freq)
            a = torch.cat((a, a), dim=-1)                                    # (T, d)
            cos, sin = a.cos().to(q.dtype), a.sin().to(q.dtype)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        mask = self._mask(x, rest[-1]) if self.pad_index is not None else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=self.causal and mask is None)  # (B, H, T, d)
        # reshape to x.shape, not flatten(2): ONNX shape inference can follow Shape(x), so later ops that read
        # the size (tied_linear) keep a dynamic batch and seq instead of the traced sizes baked in as constants
        return self.out_proj(y.transpose(1, 2).reshape(x.shape))            # (B, T, D)

    def _mask(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Boolean (B, 1, T, S): True where a query may attend to a key."""
        keep = (tokens != self.pad_index)[:, None, None, :]                  # (B, 1, 1, S)
        if self.causal:
            t = torch.arange(x.shape[1], device=x.device)
            keep = keep & (t[None, :] <= t[:, None])                         # (B, 1, T, T)
        # a query that sees no key (an all-pad row) attends to every key: finite output, no NaN
        return keep | ~keep.any(dim=-1, keepdim=True)


# ---- pooling and slicing -------------------------------------------------------------------------
class Patchify(nn.Module):
    """Non-overlapping p x q patches: (B, C, H, W) -> (B, (H/p)(W/q), C*p*q), features ordered (c, i, j)."""

    def __init__(self, channels: int, height: int, width: int, patch: tuple[int, int]) -> None:
        super().__init__()
        self.c, (self.p, self.q) = channels, patch
        self.h, self.w = height // self.p, width // self.q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.c, self.h, self.p, self.w, self.q)  # (B, C, h, p, w, q)
        x = x.permute(0, 2, 4, 1, 3, 5)                             # (B, h, w, C, p, q)
        return x.reshape(-1, self.h * self.w, self.c * self.p * self.q)


class Select(nn.Module):
    """Pick one index along an axis, removing it."""

    def __init__(self, dim: int, index: int) -> None:
        super().__init__()
        self.dim, self.index = dim, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.select(self.dim, self.index)


class Slice(nn.Module):
    """x[start:end] along one axis (Python slice semantics; None = open end)."""

    def __init__(self, dim: int, start: int | None, end: int | None) -> None:
        super().__init__()
        self.dim, self.start, self.end = dim, start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[(slice(None),) * self.dim + (slice(self.start, self.end),)]


class MeanPool(nn.Module):
    """Mean over one axis."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dim)


class MaskedMean(nn.Module):
    """Mean over the positions whose token is not pad: (B, T, D), (B, T) -> (B, D)."""

    def __init__(self, pad_index: int) -> None:
        super().__init__()
        self.pad_index = pad_index

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        keep = (tokens != self.pad_index).to(x.dtype).unsqueeze(-1)     # (B, T, 1)
        count = keep.sum(dim=1).clamp(min=1.0)                          # (B, 1): all-pad rows divide by 1
        return (x * keep).sum(dim=1) / count                            # (B, D)
