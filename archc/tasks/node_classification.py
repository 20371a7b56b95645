"""node_classification: per-node classes of one graph; every step runs the whole graph and the split's labelled
nodes feed loss and accuracy; `archc infer` labels every node and scores the split's."""
from __future__ import annotations

from archc.tasks.base import Example, Labelled, register
from archc.tasks.gnn import EDGE_INDEX, GraphTask, unscored
from archc.labels import NODE_CLASSES


@register
class NodeClassification(GraphTask):
    """Per-node classes of one graph: every step runs the whole graph; the split's nodes feed loss and accuracy."""

    kind = "node_classification"
    data_task = NODE_CLASSES

    @classmethod
    def labelled(cls, ds, part, roles, what) -> Labelled:
        """The whole graph; only the split's nodes are labelled (-1 elsewhere, not scored)."""
        from archc.data.gnn import feeds_for

        y = unscored(len(ds.graphs.x), part.x, part.y)
        return Labelled(feeds_for(ds, None, roles), y, f"{what}, {len(part)} of {len(y)} nodes scored")

    @classmethod
    def example(cls) -> Example:
        inputs = {"x": {"shape": ["nodes", 34], "batched": False}, "edge_index": EDGE_INDEX}  # karate: one-hot ids
        return Example({"archc": 1, "model": {"name": "tiny-gcn"}, "inputs": inputs,
                        "axes": {"nodes": 34, "edges": 156}, "task": {"kind": "node_classification"},
                        "layers": [{"id": "gcn1", "op": "gcn_conv", "from": ["x", "edge_index"], "out_features": 8,
                                    "act": "relu"},
                                   {"op": "gcn_conv", "from": ["gcn1", "edge_index"], "out_features": 2}],
                        "train": {"epochs": 1, "batch_size": 64},
                        "data": {"source": "graph:karate"}},
                       infer=(("--input", "graph:karate"),))

    split = "nodes"  # one example per node (archc.train.gnn.NodeSplit)
