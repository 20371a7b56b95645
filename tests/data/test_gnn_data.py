"""archc.data.gnn: graph:karate, graph:FILE.npz (masks, batch vectors, collation), graph:synthetic, errors."""
from __future__ import annotations

import numpy as np
import pytest

from archc.data import load
from archc.data.gnn import GraphSet, input_roles
from archc.errors import DataError


def test_karate_one_labelled_member_per_faction():
    d = load("graph:karate", task="node_classification", val_fraction=0.2, test_fraction=0.2)
    g = d.graphs
    assert d.classes == ["Mr. Hi", "Officer"] and d.task == "node_classification" and d.example_shape == (34,)
    assert g.x.shape == (34, 34) and np.array_equal(g.x, np.eye(34)) and g.edge_index.shape == (2, 156)
    pairs = {tuple(e) for e in g.edge_index.T.tolist()}
    assert all((b, a) in pairs for a, b in pairs)                       # both directions of every friendship
    assert d.train.x.tolist() == [0, 33] and d.train.y.tolist() == [0, 1]
    rest = np.concatenate([d.val.x, d.test.x])
    assert len(d.val) == len(d.test) == 16 and sorted(rest.tolist()) == list(range(1, 33))
    labels = np.full(34, -1)
    for s in (d.train, d.val, d.test):
        labels[s.x] = s.y
    assert (labels >= 0).all() and np.bincount(labels).tolist() == [17, 17]
    with pytest.raises(DataError, match="expected data for graph_classification"):
        load("graph:karate", task="graph_classification")


def graphs_npz(path, shuffle: bool = True, **extra):
    """Three graphs (a triangle, an edge, a path of 3) with node feature = [graph, local id]; nodes shuffled."""
    parts = [(3, [(0, 1), (1, 2), (2, 0)]), (2, [(0, 1)]), (3, [(0, 1), (1, 2)])]
    x, edges, batch, start = [], [], [], 0
    for g, (n, es) in enumerate(parts):
        x += [[g, i] for i in range(n)]
        edges += [(start + a, start + b) for a, b in es] + [(start + b, start + a) for a, b in es]
        batch += [g] * n
        start += n
    x, e, batch = np.array(x, np.float32), np.array(edges).T, np.array(batch)
    if shuffle:  # a batch vector need not be sorted
        perm = np.random.default_rng(0).permutation(len(x))
        inv = np.argsort(perm)
        x, batch, e = x[perm], batch[perm], inv[e]
    np.savez(path, x=x, edge_index=e, batch=batch, y=np.array([1, 0, 1]), **extra)
    return path


def test_npz_graphs_with_a_batch_vector_collate_with_offsets(tmp_path):
    d = load(f"graph:{graphs_npz(tmp_path / 'g.npz')}", task="graph_classification", val_fraction=0.0,
             test_fraction=0.0)
    g = d.graphs
    assert g.num_graphs == 3 and g.node_ptr.tolist() == [0, 3, 5, 8] and g.edge_ptr.tolist() == [0, 6, 8, 12]
    assert np.array_equal(g.x[:, 0], g.batch)                          # nodes regrouped by graph
    b = g.collate(np.array([2, 1]))
    assert b["batch"].tolist() == [0, 0, 0, 1, 1]
    assert b["x"][:, 0].tolist() == [2, 2, 2, 1, 1]
    e = b["edge_index"]
    assert e.shape == (2, 6) and e.min() == 0 and e.max() == 4
    assert (b["batch"][e[0]] == b["batch"][e[1]]).all()                # no edge leaves its graph
    assert sorted(map(tuple, e[:, e[0] >= 3].T.tolist())) == [(3, 4), (4, 3)]   # graph 1's edge moved by 3
    local = b["x"][:, 1]                                                 # [graph, local id] follows its node
    path_edges = {(int(local[a]), int(local[c])) for a, c in e[:, e[0] < 3].T}
    assert path_edges == {(0, 1), (1, 0), (1, 2), (2, 1)}
    assert d.train.y.tolist() == [1, 0, 1] and d.classes == ["0", "1"]


def test_npz_masks_and_splits(tmp_path):
    n = 10
    x = np.random.default_rng(0).standard_normal((n, 3)).astype(np.float32)
    e = np.array([[i, (i + 1) % n] for i in range(n)]).T
    y = np.arange(n) % 2
    train = np.zeros(n, bool)
    train[:4] = True
    np.savez(tmp_path / "m.npz", x=x, edge_index=e, y=y, train_mask=train, val_mask=~train & (np.arange(n) < 7),
             test_mask=np.arange(n) >= 7, classes=np.array(["even", "odd"]))
    d = load(f"graph:{tmp_path / 'm.npz'}")
    assert d.task == "node_classification" and d.classes == ["even", "odd"]
    assert (d.train.x.tolist(), d.val.x.tolist(), d.test.x.tolist()) == ([0, 1, 2, 3], [4, 5, 6], [7, 8, 9])
    np.savez(tmp_path / "plain.npz", x=x, edge_index=e, y=y)
    d = load("graph:plain.npz", root=tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert (len(d.train), len(d.val), len(d.test)) == (6, 2, 2)
    assert sorted(np.concatenate([d.train.x, d.val.x, d.test.x]).tolist()) == list(range(n))


@pytest.mark.parametrize("case, message", [
    ("range", r"'edge_index': expected node ids in 0..7, received 8"),
    ("across", r"expected both ends in one graph"),
    ("labels", r"'y': expected one label per graph \[3\]"),
    ("missing", r"expected arrays x, edge_index and y"),
    ("ids", r"expected graph ids 0..G-1 each with a node"),
])
def test_npz_errors(tmp_path, case, message):
    path = graphs_npz(tmp_path / "g.npz", shuffle=False)
    a = dict(np.load(path))
    if case == "range":
        a["edge_index"][1, 0] = 8
    elif case == "across":
        a["edge_index"][:, 0] = [0, 4]
    elif case == "labels":
        a["y"] = np.array([0, 1])
    elif case == "missing":
        del a["edge_index"]
    else:
        a["batch"] = a["batch"] * 2
    np.savez(path, **a)
    with pytest.raises(DataError, match=message):
        load(f"graph:{path}", task="graph_classification" if case == "labels" else None)


def test_synthetic_families_degree_features_and_held_out_graphs():
    d = load("graph:synthetic?graphs=40", val_fraction=0.1, test_fraction=0.25)
    again = load("graph:synthetic?graphs=40", val_fraction=0.1, test_fraction=0.25)
    g = d.graphs
    assert d.task == "graph_classification" and d.classes == ["erdos_renyi", "barabasi_albert"]
    assert np.array_equal(g.x, again.graphs.x) and np.array_equal(g.edge_index, again.graphs.edge_index)
    assert g.num_graphs == 40 and g.x.shape[1] == 7 and (g.x.sum(1) == 1).all()
    degree = np.bincount(g.edge_index[1], minlength=len(g.x))
    assert np.array_equal(g.x.argmax(1), np.minimum(degree, 6))
    ids = np.concatenate([d.train.x, d.val.x, d.test.x])
    assert sorted(ids.tolist()) == list(range(40)) and len(d.test) == 10 and len(d.val) == 4
    assert set(d.test.y.tolist()) == {0, 1}
    with pytest.raises(DataError, match=r"expected \?graphs=N"):
        load("graph:synthetic?nodes=3")


def test_unknown_graph_source_and_roles():
    with pytest.raises(DataError, match="expected karate, synthetic or an existing .npz file"):
        load("graph:nowhere.npz")
    assert input_roles({"feat": (("nodes", 3), "float32"), "e": ((2, "edges"), "int64"),
                        "g": (("nodes",), "int64")}) == {"x": "feat", "edge_index": "e", "batch": "g"}
    with pytest.raises(DataError, match="expected graph inputs"):
        input_roles({"x": (("nodes", 3), "float32")})


def test_graphset_union_keeps_each_graph_contiguous():
    s = GraphSet.union([(np.ones((2, 1)), np.array([[0], [1]])), (np.zeros((3, 1)), np.array([[2, 0], [1, 1]]))])
    assert s.node_ptr.tolist() == [0, 2, 5] and s.edge_ptr.tolist() == [0, 1, 3]
    assert s.edge_index.tolist() == [[0, 4, 2], [1, 3, 3]] and s.batch.tolist() == [0, 0, 1, 1, 1]
