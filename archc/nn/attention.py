"""Torch module of multi-head attention (optional RoPE); sizes are read from tensors, never baked in."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archc.nn.embedding import inverse_frequencies, rope_angles

# ---- attention -----------------------------------------------------------------------------------
def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half form: (B, H, T, d) with cos/sin (T, d)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    """Multi-head attention: inputs (x, [memory], [tokens], [score bias]) -> (B, T, D) via
    scaled_dot_product_attention."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, *, biases: tuple[bool, bool, bool, bool],
                 dropout: float, causal: bool, rope: bool, rope_base: float, cross: bool, pad_index: int | None,
                 num_kv_heads: int | None = None, fused_qkv: bool = False, rope_dims: int | None = None,
                 scale: float | None = None, window: int | None = None, score_bias: bool = False) -> None:
        super().__init__()
        self.num_kv_heads = num_kv_heads or num_heads
        kv_out = dim // num_heads * self.num_kv_heads
        self.split = (dim, kv_out, kv_out) if fused_qkv else None
        q_bias, k_bias, v_bias, out_bias = biases
        if fused_qkv:  # one matrix, rows q, k, v (torch's in_proj_weight; GPT-2's c_attn transposed)
            self.qkv_proj = nn.Linear(dim, dim + 2 * kv_out, bias=q_bias)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=q_bias)
            self.k_proj = nn.Linear(kv_dim, kv_out, bias=k_bias)
            self.v_proj = nn.Linear(kv_dim, kv_out, bias=v_bias)
        self.out_proj = nn.Linear(dim, dim, bias=out_bias)
        self.num_heads, self.dropout, self.causal, self.rope = num_heads, dropout, causal, rope
        self.cross, self.pad_index, self.window, self.score_bias = cross, pad_index, window, score_bias
        self.scale = scale if scale is not None else (dim // num_heads) ** -0.5  # the factor on q k^T
        if rope:
            self.rope_dims = rope_dims or dim // num_heads
            self.register_buffer("inv_freq", inverse_frequencies(self.rope_dims, rope_base), persistent=False)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, T, heads * d) -> (B, heads, T, d)

    def _shared(self, x: torch.Tensor) -> torch.Tensor:
        """Grouped-query attention: each key/value head serves num_heads / num_kv_heads query heads in a row
        (Hugging Face's repeat_kv): (B, Hkv, S, d) -> (B, H, S, d)."""
        n = self.num_heads // self.num_kv_heads
        return x if n == 1 else x.unsqueeze(2).expand(-1, -1, n, -1, -1).flatten(1, 2)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        rest, bias = (rest[:-1], rest[-1]) if self.score_bias else (rest, None)  # bias: (B or 1, H, T, S) or (H, T, S)
        memory = rest[0] if self.cross else x                                # (B, S, Dkv)
        if self.split is not None:
            q, k, v = self.qkv_proj(x).split(self.split, dim=-1)           # (B, T, D), (B, T, Dkv) x 2
        else:
            q, k, v = self.q_proj(x), self.k_proj(memory), self.v_proj(memory)
        q = self._heads(q, self.num_heads)                                   # (B, H, T, d)
        k, v = self._heads(k, self.num_kv_heads), self._heads(v, self.num_kv_heads)  # (B, Hkv, S, d)
        if self.rope:  # self-attention only: queries and keys share positions 0..T-1
            a = rope_angles(x.shape[1], self.inv_freq)
            a = torch.cat((a, a), dim=-1)                                    # (T, d)
            cos, sin = a.cos().to(q.dtype), a.sin().to(q.dtype)
            q, k = self._rotate_part(q, cos, sin), self._rotate_part(k, cos, sin)
        k, v = self._shared(k), self._shared(v)                            # (B, H, S, d)
        mask = None
        if self.pad_index is not None or self.window is not None or (bias is not None and self.causal):
            mask = self._mask(x, rest[-1] if self.pad_index is not None else None)  # (B or 1, 1, T, S)
        if bias is not None:  # additive scores; a masked-out key gets -inf
            bias = bias.to(q.dtype)
            mask = bias if mask is None else torch.where(mask, bias, float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=self.causal and mask is None, scale=self.scale)  # (B, H, T, d)
        # reshape to x.shape, not flatten(2): ONNX shape inference can follow Shape(x), so later ops that read
        # the size (tied_linear) keep a dynamic batch and seq instead of the traced sizes baked in as constants
        return self.out_proj(y.transpose(1, 2).reshape(x.shape))            # (B, T, D)

    def _rotate_part(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """RoPE on the first rope_dims features of each head, the rest passed on (GPT-NeoX's partial rotary)."""
        if self.rope_dims == x.shape[-1]:
            return _rotate(x, cos, sin)
        rot, rest = x[..., : self.rope_dims], x[..., self.rope_dims:]
        return torch.cat((_rotate(rot, cos, sin), rest), dim=-1)             # (B, H, T, d)

    def _mask(self, x: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
        """Boolean (B or 1, 1, T, S): True where a query may attend to a key (causal: keys up to the query, within
        the window if any; pad tokens masked)."""
        keep = None
        if self.causal:
            t = torch.arange(x.shape[1], device=x.device)
            keep = t[None, :] <= t[:, None]                                  # (T, T)
            if self.window is not None:  # Mistral's sliding window: keys in (p - window, p]
                keep = keep & (t[None, :] > t[:, None] - self.window)
            keep = keep[None, None]                                          # (1, 1, T, T)
        if tokens is None:
            return keep
        pad = (tokens != self.pad_index)[:, None, None, :]                   # (B, 1, 1, S)
        keep = pad if keep is None else pad & keep                           # (B, 1, T, S)
        # a query that sees no key (an all-pad row) attends to every key: finite output, no NaN
        return keep | ~keep.any(dim=-1, keepdim=True)
