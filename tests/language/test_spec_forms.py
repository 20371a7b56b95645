"""JSON and TOML forms of one spec give identical graphs; blocks, repeat and params expand as written."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

from archc.pipeline import compile_spec

ROOT = Path(__file__).resolve().parents[2]


def graph_signature(graph):
    return [(n.id, n.op.model_dump(by_alias=True), n.inputs, n.act and n.act.name(), n.out, n.params, n.flops)
            for n in graph.nodes], graph.inputs, graph.outputs


def test_toml_and_json_forms_are_identical(tmp_path):
    for name in ("digit_classifier.toml", "residual_cnn.toml"):
        toml_path = ROOT / "specs" / name
        json_path = tmp_path / (toml_path.stem + ".json")
        json_path.write_text(json.dumps(tomllib.loads(toml_path.read_text())))
        a, b = compile_spec(toml_path), compile_spec(json_path)
        assert graph_signature(a.graph) == graph_signature(b.graph)
        assert a.sha256 == b.sha256


def test_residual_blocks_expand_with_repeat_and_params():
    g = compile_spec(ROOT / "specs" / "residual_cnn.toml").graph
    ids = [n.id for n in g.nodes]
    assert "stage1.0.conv1" in ids and "stage1.1.sum" in ids and "stage2.1.conv2" in ids
    assert g.node("stage2.0.conv1").out.shape == ("batch", 32, 14, 14)
    assert g.node("stage1.1.sum").inputs == ["stage1.0.sum", "stage1.1.bn2"]  # the block's `x` is its input
    assert g.node("down").inputs == ["stage1.1.sum"]                          # `stage1` names the block output


def test_digit_classifier_has_exactly_235146_parameters():
    assert compile_spec(ROOT / "specs" / "digit_classifier.toml").graph.total_params == 235_146


def test_compile_returns_module_with_pure_python_param_shapes():
    import archc
    module = archc.compile(ROOT / "specs" / "residual_cnn.toml")
    graph = compile_spec(ROOT / "specs" / "residual_cnn.toml").graph
    expected = {f"{n.id}.{k}": v for n in graph.nodes for k, v in n.params.items()}
    assert {k: tuple(p.shape) for k, p in module.named_parameters()} == expected


def test_expressions_and_symbolic_axes():
    spec = {"archc": 1, "model": {"name": "seq"}, "params": {"w": 6},
            "inputs": {"x": {"shape": ["seq", 4]}}, "axes": {"seq": 10},
            "layers": [{"op": "linear", "out_features": "${w * 2 + 1}"}, {"op": "layernorm"},
                       {"op": "linear", "out_features": "$w", "act": "gelu"}]}
    g = compile_spec(spec).graph
    assert g.nodes[0].out.shape == ("batch", "seq", 13)
    assert g.nodes[-1].out.shape == ("batch", "seq", 6)
    assert g.nodes[0].flops == 2 * 10 * 4 * 13   # symbolic axis sized by [axes]


def test_score_kind_comes_from_the_op_class():
    base = {"archc": 1, "model": {"name": "k"}, "inputs": {"x": {"shape": [4]}}}
    for act, kind in ((None, "logits"), ("softmax", "probs"), ("log_softmax", "log_probs"), ("relu", "logits")):
        layer = {"op": "linear", "out_features": 3, "id": "out"} | ({"act": act} if act else {})
        g = compile_spec({**base, "layers": [layer]}).graph
        assert g.score_kind("out") == kind
    g = compile_spec({**base, "layers": [{"op": "linear", "out_features": 3}, {"op": "softmax", "id": "p"}]}).graph
    assert g.score_kind("p") == "probs"
