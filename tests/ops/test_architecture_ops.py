"""Ops that published architectures need, against torch's own modules: clamp family, adaptive pooling, the
learned-tensor op (values and initialisation), and `act` with options."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from archc.errors import ArchcError
from archc.lower import lower
from archc.pipeline import compile_spec


def spec(shape: list, *layers: dict) -> dict:
    return {"archc": 1, "model": {"name": "t"}, "inputs": {"x": {"shape": shape}}, "layers": list(layers)}


def errors_of(s: dict) -> list[str]:
    with pytest.raises(ArchcError) as info:
        compile_spec(s)
    e = info.value
    return [str(x).removeprefix("<spec>: ") for x in getattr(e, "errors", [e])]


@pytest.mark.parametrize("layer,reference", [
    ({"op": "relu6"}, nn.ReLU6()), ({"op": "hardtanh"}, nn.Hardtanh()),
    ({"op": "hardtanh", "min_val": -2.0, "max_val": 0.5}, nn.Hardtanh(-2.0, 0.5)),
    ({"op": "hardsigmoid"}, nn.Hardsigmoid()), ({"op": "hardswish"}, nn.Hardswish()),
    ({"op": "clamp", "min": -1.0, "max": 2.0}, lambda x: torch.clamp(x, -1.0, 2.0)),
    ({"op": "clamp", "min": 0.5}, lambda x: torch.clamp(x, min=0.5)),
    ({"op": "clamp", "max": 0.0}, lambda x: torch.clamp(x, max=0.0)),
])
def test_clamp_family_equals_torch_as_layer_and_as_act(layer, reference):
    x = torch.linspace(-8, 8, 161).reshape(1, 161)  # covers every kink (-3, 0, 3, 6) of the family
    as_layer = lower(compile_spec(spec([161], layer)).graph)
    as_act = lower(compile_spec(spec([161], {"op": "identity", "act": layer})).graph)
    torch.testing.assert_close(as_layer(x), reference(x), rtol=0, atol=0)
    torch.testing.assert_close(as_act(x), reference(x), rtol=0, atol=0)


def test_clamp_bounds_are_checked_where_written():
    (msg,) = errors_of(spec([4], {"op": "clamp"}))
    assert msg.startswith("layers[0]: clamp: expected min or max (or both), received neither"), msg
    (msg,) = errors_of(spec([4], {"op": "linear", "out_features": 2, "act": {"op": "clamp", "min": 2.0, "max": 1.0}}))
    assert msg.startswith("layers[0].act: clamp: expected min <= max, received min = 2.0, max = 1.0")
    (msg,) = errors_of(spec([4], {"op": "hardtanh", "min_val": 1.0, "max_val": 1.0}))
    assert "layers[0]: hardtanh: expected max_val > min_val" in msg


@pytest.mark.parametrize("op,reference", [("adaptive_avg_pool2d", nn.AdaptiveAvgPool2d),
                                          ("adaptive_max_pool2d", nn.AdaptiveMaxPool2d)])
@pytest.mark.parametrize("hw,out", [((7, 7), 7), ((14, 14), 7), ((13, 9), [7, 4]), ((5, 6), [None, 4]), ((5, 6), [3, "keep"]),
                                    ((3, 2), [5, 4]), ((9, 11), 1), ((224 // 32, 224 // 32), [7, 7])])
def test_adaptive_pool_2d_equals_torch(op, reference, hw, out):
    g = compile_spec(spec([3, *hw], {"op": op, "output_size": out})).graph
    x = torch.randn(2, 3, *hw)
    want = reference(tuple(None if o == "keep" else o for o in out) if isinstance(out, list) else out)(x)
    assert g.nodes[0].out.shape == ("batch", *want.shape[1:])
    torch.testing.assert_close(lower(g)(x), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op,reference", [("adaptive_avg_pool1d", nn.AdaptiveAvgPool1d),
                                          ("adaptive_max_pool1d", nn.AdaptiveMaxPool1d)])
@pytest.mark.parametrize("length,out", [(10, 3), (10, 5), (3, 7), (1, 1)])
def test_adaptive_pool_1d_equals_torch(op, reference, length, out):
    g = compile_spec(spec([4, length], {"op": op, "output_size": out})).graph
    x = torch.randn(3, 4, length)
    torch.testing.assert_close(lower(g)(x), reference(out)(x), rtol=1e-6, atol=1e-6)


def test_vit_class_token_is_one_layer_equal_to_torchvisions_concat():
    """torchvision's VisionTransformer: x = cat([class_token.expand(n, -1, -1), x], dim=1), zeros at init."""
    g = compile_spec(spec([196, 768], {"op": "parameter", "id": "cls", "shape": [1, 768], "combine": "concat",
                                       "init": "zeros"},
                          {"op": "parameter", "id": "pos", "shape": [197, 768], "combine": "add"})).graph
    assert g.node("cls").out.shape == ("batch", 197, 768)
    assert g.total_params == 768 + 197 * 768  # torchvision ViT-B/16: class_token + pos_embedding
    m = lower(g)
    assert torch.count_nonzero(m.cls.weight) == 0
    assert abs(m.pos.weight.std().item() - 0.02) < 1e-3  # torch.nn.init.normal_(std=0.02), torchvision's too
    x = torch.randn(2, 196, 768)
    with torch.no_grad():
        m.cls.weight.normal_()
    cls, pos = m.cls.weight.unsqueeze(0), m.pos.weight.unsqueeze(0)  # torchvision's (1, 1, D), (1, 197, D)
    torch.testing.assert_close(m(x), torch.cat([cls.expand(2, -1, -1), x], dim=1) + pos, rtol=0, atol=0)


def test_parameter_takes_torchvisions_shapes_with_a_batch_axis_of_one():
    """torchvision stores class_token as (1, 1, D) and pos_embedding as (1, 197, D): written so, they match."""
    g = compile_spec(spec([196, 16], {"op": "parameter", "id": "class_token", "shape": [1, 1, 16],
                                      "combine": "concat", "init": "zeros"},
                          {"op": "parameter", "id": "pos_embedding", "shape": [1, 197, 16], "combine": "add"})).graph
    assert g.node("class_token").out.shape == ("batch", 197, 16) and g.total_params == 16 + 197 * 16
    m = lower(g)
    with torch.no_grad():
        m.class_token.weight.normal_()
    cls, pos, x = m.class_token.weight, m.pos_embedding.weight, torch.randn(3, 196, 16)
    torch.testing.assert_close(m(x), torch.cat([cls.expand(3, -1, -1), x], dim=1) + pos, rtol=0, atol=0)


def test_parameter_modes_and_initialisers():
    g = compile_spec(spec([5, 8],
                          {"op": "parameter", "id": "scale", "shape": [8], "combine": "mul", "init": "constant",
                           "value": 1e-5},
                          {"op": "parameter", "id": "reg", "shape": [4, 8], "combine": "concat", "position": "last",
                           "init": "trunc_normal", "std": 1.0},
                          {"op": "parameter", "id": "queries", "from": "x", "shape": [3, 16], "init": "ones"})).graph
    assert [g.node(n).out.shape for n in ("scale", "reg", "queries")] == [
        ("batch", 5, 8), ("batch", 9, 8), ("batch", 3, 16)]
    m = lower(g, seed=0)
    assert torch.equal(m.scale.weight, torch.full((8,), 1e-5)) and torch.equal(m.queries.weight, torch.ones(3, 16))
    assert m.reg.weight.abs().max() <= 2.0  # timm's trunc_normal_: cut at +-2 std
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(m.get_submodule("scale")(x), x * 1e-5)
    assert m.get_submodule("queries")(x).shape == (2, 3, 16)


@pytest.mark.parametrize("layer,expected", [
    ({"op": "parameter", "shape": [3], "combine": "add"}, "expected a shape that broadcasts against the input's "
                                                          "per-example axes [5, 8]"),
    ({"op": "parameter", "shape": [2, 7], "combine": "concat"}, "expected shape equal to the input's on every "
                                                                "axis but 1, received [2, 7] against"),
    ({"op": "parameter", "shape": [1, 8], "combine": "concat", "dim": 0}, "expected dim naming a per-example axis"),
])
def test_parameter_shape_errors_are_located(layer, expected):
    (msg,) = errors_of(spec([5, 8], layer))
    assert msg.startswith("layers[0]: parameter: " + expected), msg


def test_act_table_takes_options_and_lowers_like_torch():
    g = compile_spec(spec([6], {"op": "linear", "id": "fc", "out_features": 4,
                                "act": {"op": "gelu", "approximate": "tanh"}},
                          {"op": "linear", "out_features": 4, "act": {"op": "leaky_relu", "negative_slope": 0.2}},
                          {"op": "linear", "out_features": 4, "act": "relu"})).graph
    m = lower(g)
    acts = [mod for name, mod in m.named_children() if name.startswith("_")]
    assert [type(a) for a in acts] == [nn.GELU, nn.LeakyReLU, nn.ReLU]
    assert acts[0].approximate == "tanh" and acts[1].negative_slope == 0.2
    x = torch.randn(3, 6)
    torch.testing.assert_close(m.get_submodule("_fc__gelu")(x), nn.functional.gelu(x, approximate="tanh"))


def test_act_table_params_and_errors():
    s = spec([6], {"op": "linear", "out_features": 4, "act": {"op": "leaky_relu", "negative_slope": "$slope"}})
    s["params"] = {"slope": 0.3}
    assert compile_spec(s).graph.nodes[0].act.negative_slope == 0.3
    cases = [({"op": "gelu", "approximate": "tanhh"},
              "layers[0].act.approximate: expected 'none' or 'tanh', received 'tanhh'"),
             ({"op": "gelu", "approx": "tanh"}, "layers[0].act.approx: unknown attribute 'approx'"),
             ({"op": "gelu", "from": "x"}, "layers[0].act.from: unknown attribute 'from' for an activation"),
             ({"op": "linear"}, "layers[0].act.op: unknown activation 'linear'"),
             ({"approximate": "tanh"}, "layers[0].act.op: missing 'op'"),
             ("gelux", "layers[0].act: unknown activation 'gelux' (did you mean 'gelu'")]
    for act, expected in cases:
        (msg,) = errors_of(spec([6], {"op": "linear", "out_features": 4, "act": act}))
        assert msg.startswith(expected), msg


def test_fused_qkv_attention_is_torchs_multihead_attention():
    """fused_qkv's qkv_proj holds torch's in_proj_weight layout (rows q, k, v): copied in, the outputs agree."""
    g = compile_spec(spec([5, 12], {"op": "attention", "id": "att", "num_heads": 3, "fused_qkv": True,
                                    "causal": True})).graph
    assert g.total_params == 4 * 12 * 12 + 4 * 12
    module = lower(g).eval()
    ref = nn.MultiheadAttention(12, 3, batch_first=True).eval()
    with torch.no_grad():
        module.att.qkv_proj.weight.copy_(ref.in_proj_weight)
        module.att.qkv_proj.bias.copy_(ref.in_proj_bias)
        module.att.out_proj.load_state_dict(ref.out_proj.state_dict())
        x = torch.randn(2, 5, 12)
        causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # True: may not attend
        want, _ = ref(x, x, x, attn_mask=causal, need_weights=False)
        torch.testing.assert_close(module(x), want, rtol=1e-5, atol=1e-6)


def test_fused_qkv_is_for_self_attention():
    s = {"archc": 1, "model": {"name": "t"}, "inputs": {"x": {"shape": [5, 12]}, "m": {"shape": [4, 12]}},
         "layers": [{"op": "attention", "from": ["x", "m"], "num_heads": 3, "fused_qkv": True}]}
    (msg,) = errors_of(s)
    assert msg.startswith("layers[0]: attention: expected fused_qkv = false for cross-attention"), msg


def test_readme_lists_every_op():
    import re
    from pathlib import Path

    from archc.ops import REGISTRY
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("## Ops"):readme.index("## Data sources")]
    listed = {name for row in re.findall(r"^\| \w+ \| (.*) \|$", table, re.M) for name in re.findall(r"`(\w+)`", row)}
    assert listed == set(REGISTRY)


def test_vit_b16_written_with_parameter_and_fused_qkv_has_torchvisions_parameter_count():
    """specs/zoo/vit_b16.toml, torchvision's vit_b_16: conv_proj, class_token (one layer), pos_embedding (one
    layer), 12 pre-norm encoder blocks (fused q/k/v projection like nn.MultiheadAttention's in_proj; MLP 3072 with
    GELU), the final norm, the class head."""
    import tomllib
    from pathlib import Path

    s = tomllib.loads((Path(__file__).resolve().parents[2] / "specs" / "zoo" / "vit_b16.toml").read_text())
    g = compile_spec(s).graph
    assert g.total_params == 86_567_656  # torchvision.models.vit_b_16()
    assert g.node("class_token").out.shape == ("batch", 197, 768)
    assert g.node("layers.0.self_attention").op.fused_qkv
