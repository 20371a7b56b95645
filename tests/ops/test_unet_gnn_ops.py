"""Graph and U-Net ops beyond the conformance examples: numerics against hand computations on tiny graphs,
gradients of the segment reductions, ONNX form of the aggregation, shape errors, and the example specs."""
from __future__ import annotations

import math
from pathlib import Path

import onnx
import pytest
import torch

from archc.errors import ShapeError
from archc.export import export
from archc.lower import lower
from archc.nn.gnn import segment_max, segment_softmax, segment_sum
from archc.ops import REGISTRY
from archc.ops.base import TensorType as T
from archc.pipeline import compile_spec

ROOT = Path(__file__).resolve().parents[2]
PATH_EDGES = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # the path 0 - 1 - 2, both directions


def module(name: str, ins: list[T], **attrs):
    torch.manual_seed(0)
    return REGISTRY[name].model_validate({"op": name, **attrs}).to_torch(ins).eval()


def graph_ins(nodes: int | str = "nodes", features: int = 4) -> list[T]:
    return [T((nodes, features)), T((2, "edges"), "int64")]


def dense_adjacency(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    """A[i, j] = number of edges j -> i (messages flow source -> target)."""
    a = torch.zeros(n, n)
    for j, i in edge_index.t().tolist():
        a[i, j] += 1
    return a


# ---- numerics ------------------------------------------------------------------------------------
def test_gcn_on_a_path_equals_the_dense_formula():
    m = module("gcn_conv", graph_ins(), out_features=3)
    with torch.no_grad():
        m.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        x = torch.randn(3, 4)
        a_hat = dense_adjacency(PATH_EDGES, 3) + torch.eye(3)
        d = a_hat.sum(1).rsqrt()                                           # degrees 2, 3, 2
        want = (d[:, None] * a_hat * d[None, :]) @ x @ m.weight.t() + m.bias
        assert torch.allclose(m(x, PATH_EDGES), want, atol=1e-6)


def test_gcn_without_normalization_or_loops_sums_neighbours():
    m = module("gcn_conv", graph_ins(), out_features=2, normalize=False, add_self_loops=False, bias=False)
    edges = torch.tensor([[0, 0, 2, 2], [1, 1, 1, 0]])                  # a repeated edge counts twice
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(m(x, edges), dense_adjacency(edges, 3) @ x @ m.weight.t(), atol=1e-6)


def test_sage_mean_is_self_plus_mean_of_in_neighbours():
    m = module("sage_conv", graph_ins(), out_features=3)
    edges = torch.tensor([[1, 2, 0], [0, 0, 1]])                         # 0 <- {1, 2}, 1 <- {0}, 2 <- none
    x = torch.randn(3, 4)
    mean = torch.stack([(x[1] + x[2]) / 2, x[0], torch.zeros(4)])
    with torch.no_grad():
        assert torch.allclose(m(x, edges), m.lin_self(x) + m.lin_neigh(mean), atol=1e-6)


def test_segment_softmax_sums_to_one_per_target_and_survives_large_scores():
    index = torch.tensor([0, 0, 0, 2, 2, 3])                             # node 1 has no incoming edge
    scores = torch.tensor([[1.0, 500.0], [2.0, 400.0], [3.0, -900.0], [0.0, 1000.0], [5.0, 1.0], [7.0, 3.0]])
    alpha = segment_softmax(scores, index, 4, 2)
    sums = segment_sum(alpha, index, 4, (2,))
    assert torch.allclose(sums[[0, 2, 3]], torch.ones(3, 2)) and torch.equal(sums[1], torch.zeros(2))
    assert torch.isfinite(alpha).all()
    assert torch.allclose(alpha[:3, 0], torch.softmax(scores[:3, 0], 0))


def test_gat_single_head_matches_a_dense_masked_softmax():
    m = module("gat_conv", graph_ins(), out_features=3, heads=1)
    x = torch.randn(3, 4)
    with torch.no_grad():
        h = x @ m.weight.t()                                               # (N, C)
        e = torch.nn.functional.leaky_relu((h @ m.att_dst[0])[:, None] + (h @ m.att_src[0])[None, :], 0.2)
        mask = (dense_adjacency(PATH_EDGES, 3) + torch.eye(3)) > 0        # e[i, j]: j -> i
        alpha = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=1)
        assert torch.allclose(m(x, PATH_EDGES), alpha @ h + m.bias, atol=1e-6)


@pytest.mark.parametrize("name,reduce", [("global_mean_pool", "mean"), ("global_max_pool", "amax"),
                                         ("global_sum_pool", "sum")])
def test_pooling_with_a_batch_vector(name, reduce):
    m = module(name, [T(("nodes", 2)), T(("nodes",), "int64")])
    x = torch.randn(6, 2)
    batch = torch.tensor([0, 0, 1, 1, 1, 2])
    want = torch.stack([getattr(x[batch == g], reduce)(0) for g in range(3)])
    assert torch.allclose(m(x, batch), want, atol=1e-6)
    whole = module(name, [T(("nodes", 2))])(x)
    assert whole.shape == (1, 2) and torch.allclose(whole[0], getattr(x, reduce)(0))


def test_max_pool_gives_zero_for_a_graph_id_without_nodes():
    m = module("global_max_pool", [T(("nodes", 2)), T(("nodes",), "int64")])
    out = m(-torch.ones(3, 2), torch.tensor([0, 0, 2]))
    assert torch.equal(out, torch.tensor([[-1.0, -1.0], [0.0, 0.0], [-1.0, -1.0]]))


def test_segment_reductions_have_correct_gradients():
    index = torch.tensor([0, 2, 0, 1, 2, 2])
    src = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: segment_sum(s, index, 4, (3,)), (src,))
    assert torch.autograd.gradcheck(lambda s: segment_max(s, index, 3, (3,)), (src,))


def test_timestep_embedding_is_cos_then_sin():
    m = module("timestep_embedding", [T(("batch", 1))], dim=6, max_period=100.0)
    t = torch.tensor([[0.0], [3.0]])
    freqs = torch.tensor([100.0 ** (-i / 3) for i in range(3)])
    want = torch.cat([torch.cos(t * freqs), torch.sin(t * freqs)], dim=1)
    assert torch.allclose(m(t), want, atol=1e-6)
    assert module("timestep_embedding", [T(("batch",))], dim=5)(torch.zeros(2)).shape == (2, 5)


def test_scale_shift_and_add_channels_broadcast_per_example():
    x, v = torch.randn(2, 3, 4, 4), torch.randn(2, 6)
    y = module("scale_shift", [T(("batch", 3, 4, 4)), T(("batch", 6))])(x, v)
    assert torch.allclose(y, x * (1 + v[:, :3, None, None]) + v[:, 3:, None, None])
    y = module("add_channels", [T(("batch", 3, 4, 4)), T(("batch", 3))])(x, v[:, :3])
    assert torch.allclose(y, x + v[:, :3, None, None])


# ---- export --------------------------------------------------------------------------------------
def graph_spec(layers: list[dict], pool: bool = False) -> dict:
    inputs = {"x": {"shape": ["nodes", 4], "batched": False},
              "edge_index": {"shape": [2, "edges"], "dtype": "int64", "vocab": "nodes", "batched": False}}
    if pool:
        inputs["batch"] = {"shape": ["nodes"], "dtype": "int64", "vocab": "graphs", "batched": False}
    return {"archc": 1, "model": {"name": "g"}, "inputs": inputs, "task": {"kind": "regression"},
            "axes": {"nodes": 30, "edges": 200, "graphs": 3}, "layers": layers}


def test_aggregation_exports_as_scatternd_with_a_reduction(tmp_path):
    """Stock index_add / index_put(accumulate) export a ScatterND without reduction: wrong on repeated targets."""
    result = compile_spec(graph_spec([{"op": "sage_conv", "from": ["x", "edge_index"], "out_features": 3,
                                       "aggr": "max"},
                                      {"op": "global_sum_pool", "from": ["sage_conv_0", "batch"]}], pool=True))
    report = export(lower(result.graph), result.graph, result.spec, result.raw, result.sha256, tmp_path / "g.onnx")
    assert report.max_abs_diff <= report.tolerance  # parity at other node, edge and graph counts
    model = onnx.load(tmp_path / "g.onnx")
    reductions = sorted(a.s.decode() for n in model.graph.node if n.op_type == "ScatterND" for a in n.attribute)
    assert reductions == ["add", "max"]
    assert not any(n.op_type == "ScatterElements" for n in model.graph.node)
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["graphs", 3]


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
    with pytest.raises(ShapeError, match="expected output_padding smaller than stride or dilation"):
        bad.infer([T(("batch", 4, 5, 7))])


# ---- the example specs ---------------------------------------------------------------------------
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
