"""Sequence modules (archc/nn: attention, recurrent, sequence) against torch's own layers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from archc.ops import REGISTRY
from archc.ops.base import TensorType as T


def test_attention_matches_torch_multihead_attention():
    op = REGISTRY["attention"].model_validate({"op": "attention", "num_heads": 2, "causal": True, "pad_index": 0})
    torch.manual_seed(0)
    m = op.to_torch([T(("batch", "seq", 8)), T(("batch", "seq"), "int64")]).eval()
    ref = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([m.q_proj.weight, m.k_proj.weight, m.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([m.q_proj.bias, m.k_proj.bias, m.v_proj.bias]))
        ref.out_proj.load_state_dict(m.out_proj.state_dict())
        x, tok = torch.randn(3, 6, 8), torch.randint(1, 5, (3, 6))
        tok[0, 4:], tok[1, 2] = 0, 0
        future = torch.ones(6, 6, dtype=torch.bool).triu(1)
        want, _ = ref(x, x, x, attn_mask=future, key_padding_mask=tok == 0, need_weights=False)
        assert torch.allclose(m(x, tok), want, atol=1e-5)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_recurrent_last_is_the_top_layers_final_states(name):
    op = REGISTRY[name].model_validate({"op": name, "hidden_size": 4, "num_layers": 2, "bidirectional": True,
                                        "output": "last"})
    m = op.to_torch([T(("batch", "seq", 3))]).eval()
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        last = m(x)
        m.output = "sequence"
        y = m(x)  # (B, T, 2H): forward's last step, backward's first
    assert torch.allclose(last, torch.cat([y[:, -1, :4], y[:, 0, 4:]], dim=-1), atol=1e-6)


def test_patchify_matches_unfold():
    m = REGISTRY["patchify"].model_validate({"op": "patchify", "patch_size": 2}).to_torch([T(("batch", 3, 4, 6))])
    img = torch.randn(2, 3, 4, 6)
    assert torch.equal(m(img), nn.Unfold(2, stride=2)(img).transpose(1, 2))
