"""Graph sources (numpy + networkx, no downloads): graph:karate, graph:FILE.npz and graph:synthetic.

Graphs are kept as one disjoint union (a GraphSet): node features x [N, F], edge_index [2, E] (row 0 source,
row 1 target; undirected graphs list both directions) with every graph's nodes and edges contiguous. The splits
of a graph Dataset hold ids instead of features: node ids for node classification (one graph, masks pick the
nodes), graph ids for graph classification (several graphs, collated into x, edge_index and a batch vector).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from archc.data.arrays import classes_from_labels
from archc.data.base import Example, Source, Splits, register
from archc.data.options import SourceOptions, option
from archc.data.dataset import Dataset, Split, split_indices
from archc.errors import DataError
from archc.util import load_arrays
from archc.labels import GRAPH_CLASSES, NODE_CLASSES

TASKS = (NODE_CLASSES, GRAPH_CLASSES)
ROLES = ("x", "edge_index", "batch")           # node features, edges, graph id per node
KARATE_TRAIN = (0, 33)                         # Mr. Hi and the officer: one labelled node per faction
DEGREE_FEATURES = 7                            # synthetic graphs: one-hot degree 0..5, and 6 or more
SYNTHETIC_FAMILIES = ("erdos_renyi", "barabasi_albert")


@dataclass
class GraphSet:
    """Several graphs as one disjoint union; graph g owns nodes node_ptr[g]:node_ptr[g+1] and likewise edges."""

    x: np.ndarray            # (N, F) float32
    edge_index: np.ndarray   # (2, E) int64, global node ids
    node_ptr: np.ndarray     # (G + 1,) int64
    edge_ptr: np.ndarray     # (G + 1,) int64

    @property
    def num_graphs(self) -> int:
        return len(self.node_ptr) - 1

    @property
    def batch(self) -> np.ndarray:
        """The graph id of every node: (N,) int64."""
        return np.repeat(np.arange(self.num_graphs, dtype=np.int64), np.diff(self.node_ptr))

    @classmethod
    def union(cls, graphs: Iterable[tuple[np.ndarray, np.ndarray]]) -> "GraphSet":
        """From (x [n, F], edge_index [2, e] with local node ids) per graph."""
        xs, edges, nodes, counts = [], [], [0], [0]
        for x, e in graphs:
            edges.append(np.asarray(e, dtype=np.int64) + nodes[-1])
            xs.append(np.asarray(x, dtype=np.float32))
            nodes.append(nodes[-1] + len(x))
            counts.append(counts[-1] + edges[-1].shape[1])
        return cls(np.concatenate(xs), np.concatenate(edges, axis=1), np.array(nodes, dtype=np.int64),
                   np.array(counts, dtype=np.int64))

    @classmethod
    def from_arrays(cls, x: np.ndarray, edge_index: np.ndarray, batch: np.ndarray | None,
                    where: str) -> tuple["GraphSet", np.ndarray]:
        """Check the arrays and group nodes and edges by graph; also returns the node order used (N,)."""
        n = len(x)
        e = _edge_index(edge_index, n, where)
        if batch is None:
            return cls(x, e, np.array([0, n], dtype=np.int64), np.array([0, e.shape[1]], dtype=np.int64)), np.arange(n)
        b = np.asarray(batch)
        if b.shape != (n,) or b.dtype.kind not in "iu":
            raise DataError(f"'batch': expected one integer graph id per node [{n}], received {b.dtype} "
                            f"{list(b.shape)}", where=where)
        counts = np.bincount(np.maximum(b, 0), minlength=1) if n else np.zeros(1, dtype=np.int64)
        if n and (b.min() < 0 or (counts == 0).any()):
            raise DataError(f"'batch': expected graph ids 0..G-1 each with a node, received ids from {b.min()} "
                            f"to {b.max()}" + (f" (graph {int(np.argmin(counts))} has none)" if b.min() >= 0
                                                else ""), where=where)
        if (b[e[0]] != b[e[1]]).any():
            k = int(np.argmax(b[e[0]] != b[e[1]]))
            raise DataError(f"edge {k} ({e[0, k]} -> {e[1, k]}): expected both ends in one graph, received "
                            f"graphs {b[e[0, k]]} and {b[e[1, k]]}", where=where)
        order = np.argsort(b, kind="stable")                        # nodes grouped by graph
        new_id = np.empty(n, dtype=np.int64)
        new_id[order] = np.arange(n)
        graph_of = b[order]                                          # (N,) sorted graph ids
        e = new_id[e]
        e = e[:, np.argsort(graph_of[e[0]], kind="stable")]          # edges grouped by graph
        edge_counts = np.bincount(graph_of[e[0]], minlength=len(counts))
        return cls(x[order], e, _ptr(counts), _ptr(edge_counts)), order

    def collate(self, graph_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The graphs at graph_ids as one batch: {x [n, F], edge_index [2, e] (renumbered), batch [n]}."""
        g = np.asarray(graph_ids, dtype=np.int64)
        nodes, edges = np.diff(self.node_ptr)[g], np.diff(self.edge_ptr)[g]           # (k,) each
        node_ids = _ranges(self.node_ptr[g], nodes)                                   # (n,)
        edge_ids = _ranges(self.edge_ptr[g], edges)                                   # (e,)
        start = np.cumsum(nodes) - nodes                                              # new first node per graph
        shift = np.repeat(start - self.node_ptr[g], edges)                            # (e,)
        return {"x": self.x[node_ids], "edge_index": self.edge_index[:, edge_ids] + shift,
                "batch": np.repeat(np.arange(len(g), dtype=np.int64), nodes)}

    def whole(self) -> dict[str, np.ndarray]:
        """Every graph at once, in storage order."""
        return {"x": self.x, "edge_index": self.edge_index, "batch": self.batch}


def _ptr(counts: np.ndarray) -> np.ndarray:
    """Offsets (G + 1,) from counts (G,)."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """concatenate(arange(s, s + c) for s, c in zip(starts, counts)), vectorised."""
    total = int(counts.sum())
    offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return np.arange(total, dtype=np.int64) + offsets


def _edge_index(edge_index: np.ndarray, n: int, where: str) -> np.ndarray:
    e = np.asarray(edge_index)
    if e.ndim != 2 or e.shape[0] != 2 or e.dtype.kind not in "iu":
        raise DataError(f"'edge_index': expected integers shaped [2, edges], received {e.dtype} {list(e.shape)}",
                        where=where, hint="row 0 holds the sources, row 1 the targets")
    if e.size and (e.min() < 0 or e.max() >= n):
        bad = int(e.min()) if e.min() < 0 else int(e.max())
        raise DataError(f"'edge_index': expected node ids in 0..{n - 1}, received {bad}", where=where)
    return e.astype(np.int64)


@dataclass
class GraphDataset(Dataset):
    """A Dataset whose splits hold node ids (node classification) or graph ids (graph classification)."""

    graphs: GraphSet = None  # type: ignore[assignment]


def input_roles(inputs: dict[str, tuple[tuple, str]]) -> dict[str, str]:
    """Map roles (x, edge_index, batch) to a model's input names, from {name: (shape, dtype)}: the float input
    holds node features, the int64 [2, edges] one the edges, an int64 [nodes] one the graph ids."""
    roles: dict[str, str] = {}
    for name, (shape, dtype) in inputs.items():
        role = ("x" if str(dtype).startswith("float") else
                "edge_index" if len(shape) == 2 and shape[0] == 2 else "batch" if len(shape) == 1 else None)
        if role is None or role in roles:
            raise DataError(f"input '{name}': expected graph inputs x [nodes, F] float32, edge_index [2, edges] "
                            f"int64 and optionally batch [nodes] int64, received {dtype} {list(shape)}")
        roles[role] = name
    if "x" not in roles or "edge_index" not in roles:
        raise DataError(f"expected graph inputs node features and edge_index, received {', '.join(inputs)}")
    return roles


# --- the loader -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GraphOptions(SourceOptions):
    graphs: int = option(600, ge=4, description="how many graphs graph:synthetic generates")


@register
class GraphSource(Source):
    """Graphs for node or graph classification: `karate` (networkx's Zachary karate club), `synthetic`
    (Erdős–Rényi vs Barabási–Albert graphs) or an .npz with x, edge_index, y and optionally batch and masks."""

    scheme = "graph"
    argument = "FILE.npz"
    takes_path = True
    names = ("karate", "synthetic")
    tasks = TASKS
    Options = GraphOptions

    def load(self, arg: Path | str, splits: Splits, task: str | None, options: GraphOptions) -> GraphDataset:
        """graph:karate | graph:synthetic[?graphs=N] | graph:FILE.npz, split for node or graph classification."""
        fractions = dict(val_fraction=splits.val_fraction, test_fraction=splits.test_fraction, seed=splits.seed)
        if arg == "karate":
            return _expect_task(karate(**fractions), task)
        if arg == "synthetic":
            return _expect_task(synthetic(graphs=options.graphs, name=self.name, **fractions), task)
        if arg.suffix.lower() != ".npz" or not arg.is_file():
            raise DataError(f"expected karate, synthetic or an existing .npz file, received "
                            f"{self.name.partition(':')[2]!r}", where=self.name)
        return from_npz(arg, task, name=self.name, **fractions)

    @classmethod
    def example(cls, folder: Path) -> Example:
        return Example("graph:karate", NODE_CLASSES, (34,), 34)


def _expect_task(d: GraphDataset, task: str | None) -> GraphDataset:
    if task is not None and task != d.task:
        raise DataError(f"expected data for {task}, received {d.task} data", where=d.name)
    return d


def karate(val_fraction: float, test_fraction: float, seed: int) -> GraphDataset:
    """Zachary's karate club (networkx's copy): 34 members, one-hot ids, labelled with the faction joined;
    train = one member per faction (nodes 0 and 33), the other 32 split into val and test."""
    import networkx as nx

    g = nx.karate_club_graph()
    n = g.number_of_nodes()
    clubs = [g.nodes[i]["club"] for i in range(n)]
    classes = sorted(set(clubs))                                          # ['Mr. Hi', 'Officer']
    y = np.array([classes.index(c) for c in clubs], dtype=np.int64)
    pairs = np.array(list(g.edges()), dtype=np.int64).T                   # (2, 78) undirected
    edge_index = np.concatenate([pairs, pairs[::-1]], axis=1)             # (2, 156) both directions
    graphs = GraphSet(np.eye(n, dtype=np.float32), edge_index, np.array([0, n]), np.array([0, edge_index.shape[1]]))
    rest = np.setdiff1d(np.arange(n), KARATE_TRAIN)
    share = test_fraction / max(val_fraction + test_fraction, 1e-12)
    test_idx, val_idx = split_indices(len(rest), [share], seed, y[rest])
    masks = {"train": np.array(KARATE_TRAIN), "val": rest[val_idx], "test": rest[test_idx]}
    return _dataset(NODE_CLASSES, "graph:karate", graphs, y, classes, masks)


def synthetic(graphs: int, val_fraction: float, test_fraction: float, seed: int,
              name: str = "graph:synthetic") -> GraphDataset:
    """Graph classification: Erdős–Rényi vs Barabási–Albert graphs of 12-24 nodes with the same expected
    number of edges; features are one-hot degrees (0..5, 6+). Generated from a fixed seed (the data never
    changes); `seed` only splits it."""
    import networkx as nx

    rng = np.random.default_rng(0)
    members, labels = [], []
    for i in range(graphs):
        label, n = i % 2, int(rng.integers(12, 25))
        gseed = int(rng.integers(2**31))
        if label == 0:  # BA with m = 2 has 2 (n - 2) edges: match it in expectation
            g = nx.gnp_random_graph(n, 4 * (n - 2) / (n * (n - 1)), seed=gseed)
        else:
            g = nx.barabasi_albert_graph(n, 2, seed=gseed)
        pairs = np.array(list(g.edges()), dtype=np.int64).reshape(-1, 2).T
        degree = np.array([d for _, d in sorted(g.degree())])
        x = np.eye(DEGREE_FEATURES, dtype=np.float32)[np.minimum(degree, DEGREE_FEATURES - 1)]
        members.append((x, np.concatenate([pairs, pairs[::-1]], axis=1)))
        labels.append(label)
    y = np.array(labels, dtype=np.int64)
    return _dataset(GRAPH_CLASSES, name, GraphSet.union(members), y, list(SYNTHETIC_FAMILIES),
                          _split_masks(len(y), y, val_fraction, test_fraction, seed))


def from_npz(path: Path, task: str | None, name: str, val_fraction: float, test_fraction: float,
             seed: int) -> GraphDataset:
    """x [N, F], edge_index [2, E], y [N] (node labels) or [G] (graph labels with a batch vector [N]),
    optional train_mask / val_mask / test_mask over y's entries and classes (names)."""
    try:
        with load_arrays(path) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"expected a readable .npz file, received one that fails to load ({e})", where=name) from None
    missing = [k for k in ("x", "edge_index", "y") if k not in a]
    if missing:
        raise DataError(f"expected arrays x, edge_index and y, received keys {sorted(a)}", where=name,
                        hint=f"missing {', '.join(missing)}")
    x = a["x"]
    if x.ndim != 2 or x.dtype.kind not in "fiub":
        raise DataError(f"'x': expected numeric node features [nodes, F], received {x.dtype} {list(x.shape)}",
                        where=name)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError("'x': expected finite node features, received NaN or inf", where=name)
    graphs, order = GraphSet.from_arrays(x.astype(np.float32), a["edge_index"], a.get("batch"), name)
    y_raw = a["y"]
    if task is None:
        task = GRAPH_CLASSES if "batch" in a and len(y_raw) == graphs.num_graphs else NODE_CLASSES
    want = graphs.num_graphs if task == GRAPH_CLASSES else len(x)
    if y_raw.ndim != 1 or len(y_raw) != want:
        what = "graph" if task == GRAPH_CLASSES else "node"
        raise DataError(f"'y': expected one label per {what} [{want}] for {task}, received {list(y_raw.shape)}",
                        where=name, hint="graph classification needs a batch vector" if what == "graph" else "")
    y, derived = classes_from_labels(y_raw, name)
    classes = [str(c) for c in a["classes"].tolist()] if "classes" in a else derived
    if len(y) and y.max() >= len(classes):
        raise DataError(f"'y': expected labels in 0..{len(classes) - 1} ({len(classes)} classes), received "
                        f"{int(y.max())}", where=name)
    if task == NODE_CLASSES:
        y = y[order]  # nodes were regrouped by graph (no-op without a batch vector)
    masks = _npz_masks(a, len(y), order if task == NODE_CLASSES else None, name)
    if masks is None:
        masks = _split_masks(len(y), y, val_fraction, test_fraction, seed)
    return _dataset(task, name, graphs, y, classes, masks)


def _npz_masks(a: dict[str, np.ndarray], n: int, order: np.ndarray | None, where: str) -> dict | None:
    """{split: ids} from boolean masks (train_mask required once any is given); None when there are none."""
    given = {k: a[f"{k}_mask"] for k in ("train", "val", "test") if f"{k}_mask" in a}
    if not given:
        return None
    if "train" not in given:
        raise DataError(f"expected a train_mask with {', '.join(k + '_mask' for k in given)}", where=where)
    out = {}
    for k in ("train", "val", "test"):
        m = np.asarray(given.get(k, np.zeros(n, dtype=bool)))
        if m.shape != (n,) or m.dtype.kind not in "bui":
            raise DataError(f"'{k}_mask': expected a boolean mask [{n}] over y, received {m.dtype} {list(m.shape)}",
                            where=where)
        m = m.astype(bool)
        out[k] = np.flatnonzero(m[order] if order is not None else m)
    return out


def _split_masks(n: int, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict:
    test_idx, val_idx, train_idx = split_indices(n, [test_fraction, val_fraction], seed, y)
    return {"train": train_idx, "val": val_idx, "test": test_idx}


def _splits(y: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, Split]:
    return {k: Split(np.asarray(masks[k], dtype=np.int64), y[masks[k]]) for k in ("train", "val", "test")}


def _dataset(task: str, name: str, graphs: GraphSet, y: np.ndarray, classes: list[str], masks: dict) -> GraphDataset:
    """A node- or graph-classification dataset: the split ids are node ids or graph ids."""
    s = _splits(y, masks)
    if len(s["train"]) == 0:
        what = "node" if task == NODE_CLASSES else "graph"
        raise DataError(f"expected at least one training {what}, received none", where=name)
    return GraphDataset(name, s["train"], s["val"], s["test"], classes, (graphs.x.shape[1],), task, graphs)


def feeds_for(d: GraphDataset, ids: np.ndarray | None, roles: dict[str, str]) -> dict[str, Any]:
    """Model feeds named by `roles` (input_roles): the whole graph (node tasks, ids None) or the graphs at ids."""
    arrays = d.graphs.whole() if ids is None else d.graphs.collate(ids)
    return {name: arrays[role] for role, name in roles.items()}
