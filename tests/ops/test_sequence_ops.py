"""Sequence ops beyond the conformance examples: semantics vs torch's own layers, shape errors, weight tying."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from archc.errors import ShapeError
from archc.export import export
from archc.lower import lower
from archc.ops import REGISTRY
from archc.ops.base import TensorType as T
from archc.pipeline import compile_spec

ROOT = Path(__file__).resolve().parents[2]


def spec(inputs: dict, layers: list[dict]) -> dict:
    return {"archc": 1, "model": {"name": "t"}, "inputs": inputs, "task": {"kind": "regression"}, "layers": layers}


def tokens(*shape) -> dict:
    return {"shape": list(shape), "dtype": "int64", "vocab": 10}


def shape_error(inputs: dict, layers: list[dict]) -> str:
    with pytest.raises(ShapeError) as e:
        compile_spec(spec(inputs, layers))
    return e.value.line()


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


def test_slice_of_a_symbolic_axis_names_its_length():
    x = {"x": {"shape": ["seq", 8]}}
    r = compile_spec(spec(x, [{"id": "a", "op": "slice", "start": 1},
                              {"id": "b", "op": "slice", "end": -1, "from": "x"},
                              {"id": "c", "op": "add", "from": ["a", "b"]}]))
    assert r.graph.type_of("c").shape == ("batch", "seq-1", 8)  # x[1:] and x[:-1] have one length
    assert r.graph.type_of("a").shape == ("batch", "seq-1", 8)
    assert "seq-1 vs seq" in shape_error(x, [{"id": "a", "op": "slice", "start": 1}, {"op": "add", "from": ["a", "x"]}])
    fixed = compile_spec(spec(x, [{"op": "slice", "start": 2, "end": 5}]))
    assert fixed.graph.type_of("slice_0").shape == ("batch", 3, 8)


@pytest.mark.parametrize("inputs,layers,message", [
    ({"x": {"shape": ["seq", 4]}, "y": {"shape": [5, 4]}}, [{"op": "add", "from": ["x", "y"]}], "seq vs 5"),
    ({"x": {"shape": [3, 30, 32]}}, [{"op": "patchify", "patch_size": 4}],
     "expected height and width divisible by patch_size 4x4, received [batch, 3, 30, 32]"),
    ({"x": {"shape": ["seq", 4]}}, [{"op": "embedding", "num_embeddings": 4, "embedding_dim": 3}],
     "expected int64 token ids, received float32"),
    ({"x": {"shape": ["seq", 6]}}, [{"op": "attention", "num_heads": 4}], "divisible by num_heads = 4, received 6"),
    ({"x": {"shape": ["seq", 8]}, "t": tokens("len")}, [{"op": "attention", "num_heads": 2, "pad_index": 0,
                                                         "from": ["x", "t"]}], "expected tokens [batch, seq]"),
    ({"x": {"shape": ["seq", 8]}, "m": {"shape": ["mem", 8]}},
     [{"op": "attention", "num_heads": 2, "causal": True, "from": ["x", "m"]}], "causal = false for cross"),
    ({"x": {"shape": [5, 8]}}, [{"op": "select", "index": 5}], "expected index in [-5, 4]"),
    ({"x": {"shape": [20, 8]}}, [{"op": "pos_embedding", "max_len": 16}], "at most max_len = 16"),
    ({"x": {"shape": ["seq", 8]}, "t": {"shape": ["seq"]}}, [{"op": "masked_mean", "from": ["x", "t"]}],
     "expected int64 tokens [batch, seq]"),
    ({"x": tokens("seq")}, [{"op": "embedding", "id": "e", "num_embeddings": 10, "embedding_dim": 8},
                            {"op": "linear", "out_features": 6}, {"op": "tied_linear", "tie": "e"}],
     "expected an input [batch, ..., 8] (the features of 'e'), received [batch, seq, 6]"),
])
def test_shape_errors_say_expected_and_received(inputs, layers, message):
    assert message in shape_error(inputs, layers)


def test_tied_linear_shares_the_table_once(tmp_path):
    r = compile_spec(spec({"tok": tokens("seq")}, [
        {"op": "embedding", "id": "emb", "num_embeddings": 300, "embedding_dim": 16},
        {"op": "tied_linear", "id": "head", "tie": "emb"}]))
    gm = lower(r.graph)
    assert list(gm.state_dict()) == ["emb.weight"]
    assert r.graph.total_params == sum(p.numel() for p in gm.parameters()) == 300 * 16
    report = export(r, tmp_path / "m.onnx", module=gm)
    sizes = [list(i.dims) for i in onnx.load(report.path).graph.initializer]
    assert sizes.count([300, 16]) + sizes.count([16, 300]) == 1  # no transposed copy of the table


def test_transformer_demo_spec_builds(tmp_path):
    r = compile_spec(ROOT / "specs" / "transformer_block_demo.toml")
    assert r.graph.type_of(r.graph.outputs["logits"]).shape == ("batch", "seq", 256)
    report = export(r, tmp_path / "lm.onnx", module=lower(r.graph))
    assert report.max_abs_diff <= report.tolerance
    assert {c["sizes"]["seq"] for c in report.checks} == {63, 67}
