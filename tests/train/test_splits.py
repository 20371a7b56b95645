"""The split protocol: every split kind the objectives build is an Examples the loop can batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from archc.data import Split, load
from archc.train.gnn import Feeds, GraphSplit, NodeSplit
from archc.train.splits import SPLITS, DeviceSplit, Examples

CPU = torch.device("cpu")


def _device_splits() -> dict:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 3)).astype(np.float32), np.arange(10, dtype=np.int64)
    return {k: DeviceSplit.of(Split(x, y), CPU) for k in SPLITS}


def _graph_splits(source: str, task: str) -> dict:
    dataset = load(source, task=task, val_fraction=0.2, test_fraction=0.2)
    roles = {"x": "x", "edge_index": "edge_index"} | ({"batch": "batch"} if task == "graph_classification" else {})
    cls = GraphSplit if task == "graph_classification" else NodeSplit
    return {k: cls(getattr(dataset, k), dataset.graphs, roles, CPU) for k in SPLITS}  # type: ignore[attr-defined]


KINDS = {"device": _device_splits,
         "node": lambda: _graph_splits("graph:karate", "node_classification"),
         "graph": lambda: _graph_splits("graph:synthetic?graphs=20", "graph_classification")}


@pytest.mark.parametrize("kind", KINDS)
def test_every_split_kind_satisfies_the_protocol(kind):
    splits = KINDS[kind]()
    assert set(splits) == set(SPLITS)
    for split in splits.values():
        assert isinstance(split, Examples), type(split)
        assert split.device == CPU
        idx = torch.arange(len(split))[:3].flip(0)
        x, y = split.take(idx)
        assert len(y) == len(idx) and y.device == CPU
        assert isinstance(x, torch.Tensor if kind == "device" else Feeds)


def test_the_kinds_take_what_their_task_reads():
    device = _device_splits()["train"]
    x, y = device.take(torch.tensor([4, 1]))
    assert y.tolist() == [4, 1] and torch.equal(x, device.x[[4, 1]])
    node = _graph_splits("graph:karate", "node_classification")["val"]
    assert isinstance(node, NodeSplit)
    feeds, y = node.take(torch.tensor([0]))
    assert feeds.inputs["x"].shape[0] == 34 and feeds.rows is not None and feeds.rows.shape == (1,)
    graphs = _graph_splits("graph:synthetic?graphs=20", "graph_classification")["train"]
    assert isinstance(graphs, GraphSplit)
    feeds, y = graphs.take(torch.tensor([0, 1]))
    assert feeds.rows is None and set(feeds.inputs["batch"].tolist()) == {0, 1} and len(y) == 2


def test_a_class_without_take_is_not_a_split():
    class Sized:
        device = CPU

        def __len__(self) -> int:
            return 0

    assert not isinstance(Sized(), Examples)
