"""Graph neural network modules (archc/nn/gnn.py): numerics against hand computations on tiny graphs, and
gradients of the segment reductions."""
from __future__ import annotations

import pytest
import torch

from archc.nn.gnn import segment_max, segment_softmax, segment_sum
from archc.ops import REGISTRY
from archc.ops.base import TensorType as T


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
