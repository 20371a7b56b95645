"""JSON and TOML forms of one spec give identical graphs; parameters, expressions and symbolic axes evaluate."""
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


def test_expressions_and_symbolic_axes():
    spec = {"archc": 1, "model": {"name": "seq"}, "params": {"w": 6},
            "inputs": {"x": {"shape": ["seq", 4]}}, "axes": {"seq": 10},
            "layers": [{"op": "linear", "out_features": "${w * 2 + 1}"}, {"op": "layernorm"},
                       {"op": "linear", "out_features": "$w", "act": "gelu"}]}
    g = compile_spec(spec).graph
    assert g.nodes[0].out.shape == ("batch", "seq", 13)
    assert g.nodes[-1].out.shape == ("batch", "seq", 6)
    assert g.nodes[0].flops == 2 * 10 * 4 * 13   # symbolic axis sized by [axes]
