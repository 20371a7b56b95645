"""attention's options of issue 24: per-projection biases, scale, sliding window, a score bias from another node.
Values are checked by the conformance tests (the op's examples); here: what validate says about each, located, and
that torch computes the formulas they name (a window by hand, bias_from as a real input)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from archc.cli import main
from archc.lower import lower
from archc.pipeline import compile_spec


def spec(*layers: dict, inputs: dict | None = None) -> dict:
    return {"archc": 1, "model": {"name": "attn-options"}, "axes": {"seq": 6}, "task": {"kind": "regression"},
            "inputs": inputs or {"x": {"shape": ["seq", 8]}}, "layers": list(layers)}


def validate(tmp_path: Path, raw: dict) -> tuple[int, str]:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(raw))
    r = CliRunner().invoke(main, ["validate", str(path)])
    return r.exit_code, r.output


BIAS_INPUTS = {"x": {"shape": ["seq", 8]}, "b": {"shape": [2, "seq", "seq"], "batched": False}}


@pytest.mark.parametrize("layers, inputs, where, message", [
    ([{"op": "attention", "id": "a", "num_heads": 2, "window": 3}], None, "layers[0] (a)",
     "expected causal = true with window (sliding-window causal attention), received causal = false"),
    ([{"op": "attention", "id": "a", "num_heads": 2, "fused_qkv": True, "k_bias": False}], None, "layers[0] (a)",
     "expected q_bias, k_bias and v_bias alike with fused_qkv (one qkv_proj, one bias), received q_bias = true, "
     "k_bias = false, v_bias = true"),
    ([{"op": "attention", "id": "a", "num_heads": 2, "from": "x", "bias_from": "nope"}], BIAS_INPUTS,
     "layers[0] (a).bias_from", "'bias_from' names unknown node 'nope'"),
    ([{"op": "attention", "id": "a", "num_heads": 2, "from": "x", "bias_from": "later"},
      {"op": "linear", "id": "later", "out_features": 8, "from": "x"}], None, "layers[0] (a).bias_from",
     "expected 'bias_from' to name an input or an earlier layer, received 'later' (defined later at layers[1])"),
    ([{"op": "attention", "id": "a", "num_heads": 4, "from": "x", "bias_from": "b"}], BIAS_INPUTS, "layers[0] (a)",
     "expected the score bias (bias_from = 'b'): float32 [4, seq, seq] or [batch, 4, seq, seq] (heads, queries, "
     "keys; any of them may be 1), received [2, seq, seq] (heads axis 2, not 4 or 1)"),
    ([{"op": "attention", "id": "a", "num_heads": 2, "from": "x", "bias_from": "b"}],
     {"x": {"shape": ["seq", 8]}, "b": {"shape": [2, 6]}}, "layers[0] (a)", "received [batch, 2, 6]"),
    ([{"op": "attention", "id": "a", "num_heads": 2, "scale": 0}], None, "layers[0] (a).scale", "expected a value > 0.0, received 0"),
])
def test_located_validate_errors(tmp_path, layers, inputs, where, message):
    code, out = validate(tmp_path, spec(*layers, inputs=inputs))
    assert code == 1, out
    assert where in out and message in out, out
    assert "Traceback" not in out


def test_per_projection_biases_name_the_parameters():
    """Qwen2's projections: biases on q, k, v and none on out; the counts follow."""
    c = compile_spec(spec({"op": "attention", "id": "a", "num_heads": 2, "num_kv_heads": 1, "out_bias": False}))
    names = set(c.graph.node("a").params)
    assert names == {"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight",
                     "v_proj.bias", "out_proj.weight"}
    assert c.graph.total_params == 8 * 8 + 8 + 2 * (4 * 8 + 4) + 8 * 8
    whisper = compile_spec(spec({"op": "attention", "id": "a", "num_heads": 2, "k_bias": False}))
    assert "k_proj.bias" not in whisper.graph.node("a").params and "v_proj.bias" in whisper.graph.node("a").params


def test_window_and_scale_are_the_formula_written_out():
    """torch's module against softmax(q k^T * scale + mask) v written by hand, mask: keys in (p - W, p]."""
    c = compile_spec(spec({"op": "attention", "id": "a", "num_heads": 2, "causal": True, "window": 2,
                           "scale": 0.7, "bias": False}))
    m = lower(c.graph).eval()
    a = m.get_submodule("a")
    x = torch.randn(1, 6, 8)
    q = a.q_proj(x).view(1, 6, 2, 4).transpose(1, 2)
    k = a.k_proj(x).view(1, 6, 2, 4).transpose(1, 2)
    v = a.v_proj(x).view(1, 6, 2, 4).transpose(1, 2)
    p = torch.arange(6)
    keep = (p[None, :] <= p[:, None]) & (p[None, :] >= p[:, None] - 1)  # the query and the key before it
    w = (q @ k.transpose(-1, -2) * 0.7).masked_fill(~keep, float("-inf")).softmax(-1)
    want = a.out_proj((w @ v).transpose(1, 2).reshape(1, 6, 8))
    with torch.no_grad():
        torch.testing.assert_close(m(x), want)


def test_bias_from_is_an_input_of_the_node_and_adds_to_the_scores():
    c = compile_spec(spec({"op": "linear", "id": "h", "out_features": 8, "from": "x"},
                          {"op": "attention", "id": "a", "num_heads": 2, "from": "h", "bias_from": "b"},
                          inputs=BIAS_INPUTS))
    assert c.graph.node("a").inputs == ["h", "b"]
    m = lower(c.graph).eval()
    x, b = torch.randn(2, 6, 8), torch.randn(2, 6, 6)
    masked = b.clone()
    masked[:, :, 1:] = float("-inf")  # every query reads key 0 only: the output is v(key 0) everywhere
    with torch.no_grad():
        y = m(x, masked)
        h = m.get_submodule("h")(x)
        a = m.get_submodule("a")
        want = a.out_proj(a.v_proj(h[:, :1])).expand(2, 6, 8)
        torch.testing.assert_close(y, want)
        assert not torch.allclose(m(x, b), m(x, torch.zeros_like(b)))
