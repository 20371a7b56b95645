"""The example specs written by hand in plain PyTorch, the way one would without archc (figure 1's other side).

Each module names its parameters as the spec names its nodes, so the generated module's state_dict loads into it
(strict: `copy_state`) and both sides start from the same weights.
Idiomatic torch is the point: built-in modules (nn.RMSNorm, F.scaled_dot_product_attention, F.interpolate,
index_add_ for message passing), no archc code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


# ---- MLPs ----------------------------------------------------------------------------------------------
class HandMLP(nn.Module):
    """specs/digits_mlp.toml by hand: [B, 1, 8, 8] -> 64 -> 256 -> 128 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.logits = nn.Linear(64, 256), nn.Linear(256, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)                    # (B, 64)
        x = F.relu(self.fc1(x))             # (B, 256)
        x = F.relu(self.fc2(x))             # (B, 128)
        return self.logits(x)               # (B, 10)


class MLP(nn.Module):
    """flatten -> in -> 256 -> 128 -> 10 (specs/digit_classifier.toml with 784 inputs)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.logits = nn.Linear(in_features, 256), nn.Linear(256, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


# ---- residual CNN ----------------------------------------------------------------------------------
class Res(nn.Module):
    """conv-bn-relu-conv-bn, plus the input, then relu (specs/residual_cnn.toml's block `res`)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(ch)  # named as the spec's (unnamed) layer is
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.batchnorm_1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class HandResidualCNN(nn.Module):
    """specs/residual_cnn.toml by hand: [B, 1, 28, 28] -> stem 16 -> 2 x res 16 -> down 32 -> 2 x res 32 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.stage1 = nn.Sequential(Res(16), Res(16))
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.stage2 = nn.Sequential(Res(32), Res(32))
        self.logits = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))                         # (B, 16, 28, 28)
        x = F.relu(self.down(self.stage1(x)))            # (B, 32, 14, 14)
        return self.logits(self.stage2(x).mean((2, 3)))  # (B, 10)


# ---- two branches --------------------------------------------------------------------------------------
class TwoBranch(nn.Module):
    """specs/two_branch.json: conv + max-pool image branch, linear meta branch, concatenated, two heads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.meta_feat = nn.Linear(4, 16)
        self.hidden = nn.Linear(8 * 4 * 4 + 16, 64)
        self.drop = nn.Dropout(0.1)
        self.logits, self.score = nn.Linear(64, 3), nn.Linear(64, 1)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = F.max_pool2d(F.relu(self.conv(image)), 2).flatten(1)          # (B, 128)
        b = F.gelu(self.meta_feat(meta))                                  # (B, 16)
        h = F.silu(self.hidden(torch.cat((a, b), dim=1)))                 # (B, 64)
        return self.logits(self.drop(h)), torch.sigmoid(self.score(h))


# ---- transformer -----------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.heads, self.causal = heads, causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)   # (B, H, T, d)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class PreNormBlock(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool = True, rms: bool = True, mlp: int = 4) -> None:
        super().__init__()
        norm = (lambda: nn.RMSNorm(dim, eps=1e-6)) if rms else (lambda: nn.LayerNorm(dim))
        self.norm1, self.norm2 = norm(), norm()
        self.attn = SelfAttention(dim, heads, causal)
        self.up, self.down = nn.Linear(dim, mlp * dim), nn.Linear(mlp * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class TinyGPT(nn.Module):
    """specs/transformer_block_demo.toml (RMSNorm, 2 blocks of 64) and, with LayerNorm and 4 blocks of 128,
    specs/gpt_stdlib.toml: byte embedding + learned positions, pre-norm causal blocks, tied output head."""

    def __init__(self, vocab: int = 256, dim: int = 64, heads: int = 4, depth: int = 2, max_len: int = 128,
                 rms: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Module()
        self.pos.weight = nn.Parameter(torch.zeros(max_len, dim))
        self.blocks = nn.ModuleList(PreNormBlock(dim, heads, rms=rms) for _ in range(depth))
        self.norm = nn.RMSNorm(dim, eps=1e-6) if rms else nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.emb(tokens) + self.pos.weight[: tokens.shape[1]]
        for block in self.blocks:
            h = block(h)
        return F.linear(self.norm(h), self.emb.weight)                   # (B, T, vocab), tied


class ViT(nn.Module):
    """specs/vit_digits.toml: 2x2 patches of an 8x8 image, linear embedding + learned positions, 2 pre-norm
    (LayerNorm) encoder blocks, final norm, mean over tokens, 10 logits."""

    def __init__(self, dim: int = 64, heads: int = 4, depth: int = 2, patch: int = 2, tokens: int = 16) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch * patch, dim)
        self.pos = nn.Module()
        self.pos.weight = nn.Parameter(torch.zeros(tokens, dim))
        self.blocks = nn.ModuleList(PreNormBlock(dim, heads, causal=False, rms=False, mlp=2) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.logits = nn.Linear(dim, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        p = F.unfold(image, self.patch, stride=self.patch).transpose(1, 2)  # (B, 16, 4), features (c, i, j)
        h = self.embed(p) + self.pos.weight[: p.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.logits(self.norm(h).mean(dim=1))


# ---- LSTM ------------------------------------------------------------------------------------------------
class RowLSTM(nn.Module):
    """specs/lstm_digits.toml: an 8x8 image read row by row (8 steps of 8 features) by an LSTM; the final hidden
    state -> 10 logits."""

    def __init__(self, hidden: int = 96) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, hidden, batch_first=True)
        self.logits = nn.Linear(hidden, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(image.reshape(-1, 8, 8))                     # h: (1, B, hidden)
        return self.logits(h[-1])


# ---- U-Net -----------------------------------------------------------------------------------------------
class FiLMResBlock(nn.Module):
    """conv-GN-(scale, shift from the time embedding)-silu-conv-GN-silu, plus a 1x1 skip."""

    def __init__(self, cin: int, ch: int, temb: int = 64, groups: int = 4) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(cin, ch, 3, padding=1), nn.GroupNorm(groups, ch)
        self.film = nn.Linear(temb, 2 * ch)
        self.conv2, self.norm2 = nn.Conv2d(ch, ch, 3, padding=1), nn.GroupNorm(groups, ch)
        self.skip = nn.Conv2d(cin, ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm1(self.conv1(x)) * (1 + scale) + shift)
        return F.silu(self.norm2(self.conv2(h))) + self.skip(x)


class DDPMUNet(nn.Module):
    """specs/unet_ddpm_digits.toml: 8x8 -> 4x4 -> 2x2 and back with concatenated skips, FiLM time conditioning."""

    def __init__(self, base: int = 16, temb: int = 64, tdim: int = 32) -> None:
        super().__init__()
        half = tdim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half), persistent=False)
        self.temb1, self.emb = nn.Linear(tdim, temb), nn.Linear(temb, temb)
        self.stem = nn.Conv2d(1, base, 3, padding=1)
        self.down1 = FiLMResBlock(base, base)
        self.pool1 = nn.Conv2d(base, 2 * base, 3, stride=2, padding=1)
        self.down2 = FiLMResBlock(2 * base, 2 * base)
        self.pool2 = nn.Conv2d(2 * base, 2 * base, 3, stride=2, padding=1)
        self.mid = FiLMResBlock(2 * base, 2 * base)
        self.up2 = nn.ConvTranspose2d(2 * base, 2 * base, 4, stride=2, padding=1)
        self.dec2 = FiLMResBlock(4 * base, 2 * base)
        self.up1conv = nn.Conv2d(2 * base, base, 3, padding=1)
        self.dec1 = FiLMResBlock(2 * base, base)
        self.out_norm = nn.GroupNorm(4, base)
        self.eps = nn.Conv2d(base, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        args = t * self.freqs                                              # (B, 1) * (16,) -> (B, 16)
        e = F.silu(self.emb(F.silu(self.temb1(torch.cat((args.cos(), args.sin()), dim=-1)))))
        d1 = self.down1(self.stem(x), e)                                   # (B, 16, 8, 8)
        d2 = self.down2(self.pool1(d1), e)                                 # (B, 32, 4, 4)
        m = self.mid(self.pool2(d2), e)                                    # (B, 32, 2, 2)
        u = self.dec2(torch.cat((self.up2(m), d2), dim=1), e)              # (B, 32, 4, 4)
        u = self.up1conv(F.interpolate(u, scale_factor=2, mode="nearest"))  # (B, 16, 8, 8)
        u = self.dec1(torch.cat((u, d1), dim=1), e)
        return self.eps(F.silu(self.out_norm(u)))


# ---- graphs ------------------------------------------------------------------------------------------------
class GCNLayer(nn.Module):
    """Kipf & Welling with self-loops and symmetric normalization, message passing with index_add_."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index
        n = x.shape[0]
        deg = torch.ones(n, dtype=x.dtype).index_add_(0, dst, torch.ones(dst.shape[0], dtype=x.dtype))  # + self-loop
        inv = deg.rsqrt()
        h = x @ self.weight.t()
        out = torch.zeros_like(h).index_add_(0, dst, h[src] * (inv[src] * inv[dst]).unsqueeze(1))
        return out + h * (inv * inv).unsqueeze(1) + self.bias


class GCN(nn.Module):
    """specs/gcn_karate.toml: GCN 34 -> 16, relu, dropout 0.5, GCN -> 2, per node."""

    def __init__(self, cin: int = 34, hidden: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.gcn1, self.drop, self.logits = GCNLayer(cin, hidden), nn.Dropout(0.5), GCNLayer(hidden, classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.logits(self.drop(F.relu(self.gcn1(x, edge_index))), edge_index)


class SAGELayer(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.lin_neigh, self.lin_self = nn.Linear(cin, cout), nn.Linear(cin, cout, bias=False)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index
        agg = torch.zeros_like(x).index_add_(0, dst, x[src])
        count = torch.zeros(x.shape[0], dtype=x.dtype).index_add_(0, dst, torch.ones(dst.shape[0], dtype=x.dtype))
        return self.lin_self(x) + self.lin_neigh(agg / count.clamp(min=1).unsqueeze(1))


class GraphClassifier(nn.Module):
    """specs/graph_classifier.toml: GCN 7 -> 64, SAGE(mean) 64 -> 64, mean pool per graph, dropout, linear -> 2."""

    def __init__(self, cin: int = 7, hidden: int = 64, classes: int = 2) -> None:
        super().__init__()
        self.gcn, self.sage = GCNLayer(cin, hidden), SAGELayer(hidden, hidden)
        self.drop, self.logits = nn.Dropout(0.2), nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.sage(F.relu(self.gcn(x, edge_index)), edge_index))
        graphs = int(batch.max()) + 1
        pooled = torch.zeros(graphs, h.shape[1], dtype=h.dtype).index_add_(0, batch, h)
        count = torch.zeros(graphs, dtype=h.dtype).index_add_(0, batch, torch.ones_like(batch, dtype=h.dtype))
        return self.logits(self.drop(pooled / count.clamp(min=1).unsqueeze(1)))


def copy_state(src: nn.Module, dst: nn.Module) -> None:
    """Same parameters and buffers (the hand-written modules are named as the spec's nodes)."""
    dst.load_state_dict(src.state_dict(), strict=True)


# ---- the registry ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Twin:
    """A spec's hand-written twin and the batch size figure 1 trains it at (ignored for whole-graph specs)."""

    family: str
    make: Callable[[], nn.Module]
    batch: int = 32


TWINS: dict[str, Twin] = {
    "digits_mlp": Twin("MLP", HandMLP, 32),
    "digit_classifier": Twin("MLP", lambda: MLP(784), 32),
    "residual_cnn": Twin("residual CNN", HandResidualCNN, 32),
    "two_branch": Twin("two-branch CNN+MLP", TwoBranch, 32),
    "lstm_digits": Twin("LSTM", RowLSTM, 32),
    "transformer_block_demo": Twin("Transformer (GPT)", TinyGPT, 16),
    "vit_digits": Twin("Transformer (ViT)", ViT, 32),
    "gpt_stdlib": Twin("Transformer (GPT)", lambda: TinyGPT(dim=128, depth=4, max_len=160, rms=False), 8),
    "unet_ddpm_digits": Twin("U-Net", DDPMUNet, 64),
    "gcn_karate": Twin("GCN", GCN, 1),
    "graph_classifier": Twin("GCN+SAGE", GraphClassifier, 1),
}
