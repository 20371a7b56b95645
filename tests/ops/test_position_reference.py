"""The attention score biases against Hugging Face transformers' own code (no download): T5's bucketed relative
position bias (encoder and decoder forms), Swin's 2-d relative position table and BLOOM's ALiBi, through the spec
pipeline's torch module and its emitted ONNX in ONNX Runtime; and their validate errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from archc.emit.graph import emit_model, to_proto  # noqa: E402
from archc.errors import ArchcError  # noqa: E402
from archc.lower import lower  # noqa: E402
from archc.ops.position import t5_buckets  # noqa: E402
from archc.pipeline import compile_spec  # noqa: E402


def spec(layer: dict, inputs: dict, axes: dict | None = None) -> dict:
    return {"archc": 1, "model": {"name": "bias"}, "inputs": inputs, "axes": axes or {},
            "task": {"kind": "regression"}, "layers": [{"id": "bias", **layer}]}


def both(raw: dict, feeds: dict[str, np.ndarray]) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """(the torch module, its output, ONNX Runtime's on the emitted graph) for these feeds."""
    import onnxruntime as ort

    graph = compile_spec(raw).graph
    module = lower(graph).eval()
    with torch.no_grad():
        torch.nn.init.normal_(next(iter(module.parameters()))) if list(module.parameters()) else None
        want = module(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    blob = to_proto(emit_model(graph, module.state_dict())).SerializeToString()
    got = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return module, want, got


@pytest.mark.parametrize("buckets, distance", [(32, 128), (8, 20), (33, 64), (6, 7)])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_are_transformers_buckets(buckets, distance, bidirectional):
    """Every distance either side, past max_distance too (T5's own function in float32)."""
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-3 * distance, 3 * distance + 1)
    want = T5Attention._relative_position_bucket(rel, bidirectional, buckets, distance)
    table = torch.from_numpy(t5_buckets(buckets, distance, bidirectional))
    half = buckets // 2
    if bidirectional:
        got = (rel > 0).long() * half + table[rel.abs().clamp(max=distance)]
    else:
        got = table[(-rel).clamp(min=0, max=distance)]
    assert torch.equal(got, want)


@pytest.mark.parametrize("decoder", [False, True])
def test_t5_bias_is_compute_bias(decoder):
    """A T5Attention's compute_bias (its table copied in) = the op's output, in torch and ONNX Runtime, for
    self-attention (one input) and queries against longer keys (two inputs)."""
    from transformers.models.t5.modeling_t5 import T5Attention

    config = transformers.T5Config(d_model=32, d_kv=8, num_heads=4, relative_attention_num_buckets=16,
                                   relative_attention_max_distance=24, is_decoder=decoder)
    hf = T5Attention(config, has_relative_attention_bias=True).eval()
    layer = {"op": "relative_position_bias", "num_heads": 4, "num_buckets": 16, "max_distance": 24,
             "bidirectional": not decoder}
    for inputs, feeds, (t, s) in (
            ({"x": {"shape": ["seq", 3]}}, {"x": np.zeros((2, 40, 3), np.float32)}, (40, 40)),
            ({"x": {"shape": ["seq", 3]}, "m": {"shape": ["mem", 5]}},
             {"x": np.zeros((1, 6, 3), np.float32), "m": np.zeros((1, 50, 5), np.float32)}, (6, 50))):
        raw = spec({**layer, "from": list(inputs)}, inputs, {"seq": 7, "mem": 9} if "m" in inputs else {"seq": 7})
        module, want, got = both(raw, feeds)
        with torch.no_grad():
            hf.relative_attention_bias.weight.copy_(module.bias.weight)
            ref = hf.compute_bias(t, s)[0].numpy()                            # (H, T, S)
        assert want.shape == ref.shape == (4, t, s)
        assert np.array_equal(want, ref) and np.array_equal(got, ref)


def test_swin_bias_is_transformers():
    from transformers.models.swin.modeling_swin import SwinRelativePositionBias

    hf = SwinRelativePositionBias(3, (2, 4))
    raw = spec({"op": "relative_position_bias_2d", "num_heads": 3, "window_size": [2, 4]},
               {"w": {"shape": [8, 6]}})
    module, want, got = both(raw, {"w": np.zeros((5, 8, 6), np.float32)})
    assert dict(module.bias.named_parameters())["relative_position_bias_table"].shape == (3 * 7, 3)
    with torch.no_grad():
        hf.relative_position_bias_table.copy_(module.bias.relative_position_bias_table)
        ref = hf()[0].numpy()
    assert np.array_equal(want, ref) and np.array_equal(got, ref)


@pytest.mark.parametrize("heads", [8, 6, 12])
def test_alibi_gives_blooms_attention(heads):
    """BLOOM adds slope * key position; the op slope * (key - query position): per query row a constant apart,
    so the softmax over keys (what attention takes) is the same."""
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    t = 9
    alibi = build_alibi_tensor(torch.ones(1, t), heads, torch.float32).reshape(heads, 1, t)
    raw = spec({"op": "alibi", "num_heads": heads}, {"x": {"shape": ["seq", 2]}}, {"seq": 5})
    _, want, got = both(raw, {"x": np.zeros((1, t, 2), np.float32)})
    assert np.abs(want - got).max() == 0
    scores = torch.randn(heads, t, t)
    ref = torch.softmax(scores + alibi, dim=-1)
    assert torch.allclose(torch.softmax(scores + torch.from_numpy(want), dim=-1), ref, atol=1e-6)
    slopes = alibi[:, 0, 1]                                                   # slope * 1
    assert torch.allclose(torch.from_numpy(want[:, 3, 1]), -2 * slopes)       # two steps back


@pytest.mark.parametrize("layer, inputs, message", [
    ({"op": "relative_position_bias", "num_heads": 2, "num_buckets": 3}, {"x": {"shape": [4, 2]}},
     "at least 2 buckets for each side: num_buckets >= 4"),
    ({"op": "relative_position_bias", "num_heads": 2, "num_buckets": 32, "max_distance": 8},
     {"x": {"shape": [4, 2]}}, "max_distance above the exact buckets, half of num_buckets / 2 (bidirectional) = 8"),
    ({"op": "relative_position_bias", "num_heads": 2, "max_distance": 100000}, {"x": {"shape": [4, 2]}},
     "max_distance: expected a value <= 65536, received 100000"),
    ({"op": "relative_position_bias_2d", "num_heads": 2, "window_size": 3}, {"x": {"shape": [8, 2]}},
     "windows of Wh*Ww = 9 positions"),
    ({"op": "relative_position_bias_2d", "num_heads": 2, "window_size": [2, 2, 2]}, {"x": {"shape": [4, 2]}},
     "window_size as one int or [Wh, Ww]"),
    ({"op": "alibi", "num_heads": 2}, {"x": {"shape": [], "dtype": "int64", "vocab": 3}},
     "an input [batch, seq, ...]"),
])
def test_bad_attributes_are_located_errors(layer, inputs, message):
    with pytest.raises(ArchcError) as e:
        compile_spec(spec(layer, inputs))
    assert message in str(e.value) and "layers[0] (bias)" in str(e.value), str(e.value)


def test_tied_embedding_shares_one_table_and_checks_ids_against_it():
    """Two inputs, one table: counted once, one state_dict name, one ONNX initializer; the second input's vocab is
    checked against the tied table's rows, at the layer."""
    import onnx

    def two_inputs(vocab: int) -> dict:
        return {"archc": 1, "model": {"name": "shared"}, "task": {"kind": "regression"},
                "inputs": {"a": {"shape": [5], "dtype": "int64", "vocab": 10},
                           "b": {"shape": [3], "dtype": "int64", "vocab": vocab}},
                "layers": [{"id": "table", "op": "embedding", "num_embeddings": 10, "embedding_dim": 4, "from": "a"},
                           {"id": "second", "op": "tied_embedding", "tie": "table", "from": "b"},
                           {"id": "both", "op": "concat", "from": ["table", "second"]}]}

    graph = compile_spec(two_inputs(10)).graph
    assert graph.total_params == 40
    module = lower(graph)
    assert list(module.state_dict()) == ["table.weight"]
    model = to_proto(emit_model(graph, module.state_dict()))
    assert [t.name for t in model.graph.initializer] == ["table.weight"]
    assert sum(n.op_type == "Gather" for n in model.graph.node) == 2
    onnx.checker.check_model(model)
    with pytest.raises(ArchcError) as e:
        compile_spec(two_inputs(12))
    assert "num_embeddings = 10, the rows of 'table'" in str(e.value) and "(second)" in str(e.value), str(e.value)
