"""GNN and U-Net ops beyond the conformance examples: their shape rules' errors (the modules' numerics are in
tests/nn/, the aggregation's ONNX form in tests/export/, the example specs in tests/graph/)."""
from __future__ import annotations

import pytest

from archc.errors import ShapeError
from archc.ops import REGISTRY
from archc.ops.base import TensorType as T
from archc.pipeline import compile_spec


def graph_spec(layers: list[dict], pool: bool = False) -> dict:
    inputs = {"x": {"shape": ["nodes", 4], "batched": False},
              "edge_index": {"shape": [2, "edges"], "dtype": "int64", "vocab": "nodes", "batched": False}}
    if pool:
        inputs["batch"] = {"shape": ["nodes"], "dtype": "int64", "vocab": "graphs", "batched": False}
    return {"archc": 1, "model": {"name": "g"}, "inputs": inputs, "task": {"kind": "regression"},
            "axes": {"nodes": 30, "edges": 200, "graphs": 3}, "layers": layers}


# ---- shape errors --------------------------------------------------------------------------------
def shape_error(spec: dict) -> str:
    with pytest.raises(ShapeError) as e:
        compile_spec(spec)
    return e.value.line()


def test_graph_conv_errors_say_expected_and_received():
    spec = graph_spec([{"op": "gcn_conv", "from": ["x", "edge_index"], "out_features": 3}])
    spec["inputs"]["x"]["batched"] = True
    msg = shape_error(spec)
    assert "expected node features [nodes, features] without a batch axis, received [batch, nodes, 4]" in msg
    assert msg.startswith("<spec>: layers[0]: gcn_conv: ") and "declare graph inputs with batched = false" in msg
    spec = graph_spec([{"op": "gat_conv", "from": ["x", "edge_index"], "out_features": 3}])
    spec["inputs"]["edge_index"]["shape"] = [3, "edges"]
    assert "expected an int64 edge_index [2, edges] as the second input" in shape_error(spec)
    assert "received int64 [3, edges]" in shape_error(spec)


def test_pool_batch_vector_must_match_the_nodes():
    spec = graph_spec([{"op": "global_mean_pool", "from": ["x", "batch"]}], pool=True)
    spec["inputs"]["batch"]["shape"] = ["graphs"]
    assert "expected an int64 graph id per node [nodes] as the second input, received int64 [graphs]" in \
        shape_error(spec)


def image_spec(layers: list[dict], cond: int) -> dict:
    return {"archc": 1, "model": {"name": "u"}, "task": {"kind": "regression"}, "layers": layers,
            "inputs": {"x": {"shape": [6, 4, 4]}, "e": {"shape": [cond]}}}


def test_group_norm_needs_divisible_channels():
    msg = shape_error(image_spec([{"op": "group_norm", "from": "x", "num_groups": 4}], 6))
    assert "layers[0]: group_norm: expected channels divisible by num_groups = 4, received 6 channels" in msg


@pytest.mark.parametrize("op,cond,want", [("add_channels", 5, "[batch, 6]"), ("scale_shift", 6, "[batch, 2 * 6 = 12]")])
def test_conditioning_vector_must_match_the_channels(op, cond, want):
    msg = shape_error(image_spec([{"op": op, "from": ["x", "e"]}], cond))
    assert "expected a float32 " in msg and f"{want} as the second input (the first has 6 channels)" in msg
    assert f"received float32 [batch, {cond}]" in msg


def test_conv_transpose_shape_rule():
    op = REGISTRY["conv_transpose2d"].model_validate({"op": "conv_transpose2d", "out_channels": 2, "kernel_size": 3,
                                                      "stride": 2, "padding": 1, "output_padding": 1})
    assert op.infer([T(("batch", 4, 5, 7))]).shape == ("batch", 2, 10, 14)  # (H-1)*2 - 2 + 2 + 1 + 1
    bad = op.model_copy(update={"output_padding": 2})
    with pytest.raises(ShapeError, match=r"expected output_padding smaller than stride \(as ONNX Runtime requires\)"):
        bad.infer([T(("batch", 4, 5, 7))])
