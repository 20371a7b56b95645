"""U-Net modules (archc/nn/unet.py): timestep embedding and per-example conditioning against formulas."""
from __future__ import annotations

import torch

from archc.ops import REGISTRY
from archc.ops.base import TensorType as T


def module(name: str, ins: list[T], **attrs):
    torch.manual_seed(0)
    return REGISTRY[name].model_validate({"op": name, **attrs}).to_torch(ins).eval()


def test_timestep_embedding_is_cos_then_sin():
    m = module("timestep_embedding", [T(("batch", 1))], dim=6, max_period=100.0)
    t = torch.tensor([[0.0], [3.0]])
    freqs = torch.tensor([100.0 ** (-i / 3) for i in range(3)])
    want = torch.cat([torch.cos(t * freqs), torch.sin(t * freqs)], dim=1)
    assert torch.allclose(m(t), want, atol=1e-6)
    assert module("timestep_embedding", [T(("batch",))], dim=5)(torch.zeros(2)).shape == (2, 5)


def test_scale_shift_and_add_channels_broadcast_per_example():
    x, v = torch.randn(2, 3, 4, 4), torch.randn(2, 6)
    y = module("scale_shift", [T(("batch", 3, 4, 4)), T(("batch", 6))])(x, v)
    assert torch.allclose(y, x * (1 + v[:, :3, None, None]) + v[:, 3:, None, None])
    y = module("add_channels", [T(("batch", 3, 4, 4)), T(("batch", 3))])(x, v[:, :3])
    assert torch.allclose(y, x + v[:, :3, None, None])
