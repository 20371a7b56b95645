"""Sequence ops beyond the conformance examples: shape rules and their errors (the modules' semantics against
torch's own layers are in tests/nn/test_sequence.py, weight tying in ONNX in tests/export/)."""
from __future__ import annotations

import pytest

from archc.errors import ShapeError
from archc.pipeline import compile_spec


def spec(inputs: dict, layers: list[dict]) -> dict:
    return {"archc": 1, "model": {"name": "t"}, "inputs": inputs, "task": {"kind": "regression"}, "layers": layers}


def tokens(*shape) -> dict:
    return {"shape": list(shape), "dtype": "int64", "vocab": 10}


def shape_error(inputs: dict, layers: list[dict]) -> str:
    with pytest.raises(ShapeError) as e:
        compile_spec(spec(inputs, layers))
    return e.value.line()


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
