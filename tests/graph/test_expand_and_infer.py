"""The graph IR as compiled: blocks and repeat expand as written; shapes, parameter totals and score kinds."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from archc.errors import ArchcError
from archc.pipeline import compile_spec

ROOT = Path(__file__).resolve().parents[2]


def test_residual_blocks_expand_with_repeat_and_params():
    g = compile_spec(ROOT / "specs" / "residual_cnn.toml").graph
    ids = [n.id for n in g.nodes]
    assert "stage1.0.conv1" in ids and "stage1.1.sum" in ids and "stage2.1.conv2" in ids
    assert g.node("stage2.0.conv1").out.shape == ("batch", 32, 14, 14)
    assert g.node("stage1.1.sum").inputs == ["stage1.0.sum", "stage1.1.bn2"]  # the block's `x` is its input
    assert g.node("down").inputs == ["stage1.1.sum"]                          # `stage1` names the block output


def test_digit_classifier_has_exactly_235146_parameters():
    assert compile_spec(ROOT / "specs" / "digit_classifier.toml").graph.total_params == 235_146


def test_score_kind_comes_from_the_op_class():
    base = {"archc": 1, "model": {"name": "k"}, "inputs": {"x": {"shape": [4]}}}
    for act, kind in ((None, "logits"), ("softmax", "probs"), ("log_softmax", "log_probs"), ("relu", "logits")):
        layer = {"op": "linear", "out_features": 3, "id": "out"} | ({"act": act} if act else {})
        g = compile_spec({**base, "layers": [layer]}).graph
        assert g.score_kind("out") == kind
    g = compile_spec({**base, "layers": [{"op": "linear", "out_features": 3}, {"op": "softmax", "id": "p"}]}).graph
    assert g.score_kind("p") == "probs"


@pytest.mark.parametrize("name", ["gcn_karate", "graph_classifier", "unet_ddpm_digits"])
def test_example_specs_compile(name):
    result = compile_spec(ROOT / "specs" / f"{name}.toml")
    if name == "unet_ddpm_digits":
        assert 50_000 <= result.graph.total_params <= 150_000
        assert result.graph.type_of(result.graph.outputs["eps"]).shape == ("batch", 1, 8, 8)
    else:
        out = result.graph.type_of(next(iter(result.graph.outputs.values())))
        assert out.shape == (("nodes", 2) if name == "gcn_karate" else ("graphs", 2))
    assert math.isfinite(result.graph.total_flops)


def test_a_param_may_refer_to_the_params_above_it():
    """[params] b = "${a * 2}" is evaluated in order (it once reached layers as the string and failed there)."""
    spec = {"archc": 1, "model": {"name": "p"}, "inputs": {"x": {"shape": [4]}},
            "params": {"a": 3, "b": "${a * 2}", "c": "$b"}, "blocks": {"k": {"params": {"w": "${c + 1}"},
            "layers": [{"op": "linear", "out_features": "$w"}]}},
            "layers": [{"op": "linear", "out_features": "$c"}, {"use": "k"}]}
    assert [n.out.shape[-1] for n in compile_spec(spec).graph.nodes] == [6, 7]
    with pytest.raises(ArchcError, match=r"params\.b: unknown parameter 'c' \(a parameter may refer only to "
                                         r"parameters defined above it\)"):
        compile_spec(spec | {"params": {"b": "$c", "c": 2}})
