"""Graph lookups by id go through an index: no pass scans the node list once per node (that was quadratic)."""
from __future__ import annotations

import pytest

from archc.graph.infer import infer
from archc.graph.ir import Graph
from archc.pipeline import compile_spec


def mlp(layers: int, act: str | None = None) -> dict:
    last = {"id": "out", "op": "linear", "out_features": 3, **({"act": act} if act else {})}
    return {"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [4]}}, "task": {"kind": "regression"},
            "layers": [{"id": f"fc{i}", "op": "linear", "out_features": 4} for i in range(layers)] + [last]}


class CountingList(list):
    """A node list that counts how often it is walked (each walk is O(nodes))."""

    walks = 0

    def __iter__(self):
        CountingList.walks += 1
        return super().__iter__()


class NoScan(list):
    """A node list that refuses to be walked: lookups must use the index."""

    def __iter__(self):
        raise AssertionError("the node list was scanned")


def test_node_type_of_and_score_kind_use_the_index():
    g = compile_spec(mlp(5, act="softmax")).graph
    nodes = list(g.nodes)
    g.nodes = NoScan(nodes)  # same length: the index built before stays valid
    assert g.node("fc3") is nodes[3]
    assert g.type_of("fc3").shape == ("batch", 4) and g.type_of("x").shape == ("batch", 4)
    assert g.score_kind("out") == "probs" and g.score_kind("fc1") == "logits" and g.score_kind("x") == "logits"
    assert g.get("nope") is None
    with pytest.raises(KeyError):
        g.node("nope")


def test_index_follows_nodes_changed_in_place():
    g = compile_spec(mlp(2)).graph
    extra = g.nodes.pop()
    assert g.get(extra.id) is None
    g.nodes.append(extra)
    assert g.node(extra.id) is extra


def _walks(layers: int, lower: bool) -> int:
    c = compile_spec(mlp(layers), stop_after="expand")
    g = c.graph
    graph = Graph(g.name, g.inputs, CountingList(g.nodes), g.outputs, g.sizes, g.vocab)
    CountingList.walks = 0
    infer(graph, c.spec)
    if lower:
        from archc.lower import lower as lower_graph
        lower_graph(graph)
    return CountingList.walks


@pytest.mark.parametrize("lower", [False, True])
def test_passes_walk_the_node_list_a_constant_number_of_times(lower):
    """A lookup inside a per-node loop would walk the list once per node: 10x the nodes, 10x the walks."""
    if lower:
        pytest.importorskip("torch")
    small, big = _walks(10, lower), _walks(100, lower)
    assert small == big and big <= 6, (small, big)
