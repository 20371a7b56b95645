"""graph_classification: one class per graph; each step collates batch_size graphs into x, edge_index and a
batch vector of graph ids; `archc infer` runs and scores a split's graphs."""
from __future__ import annotations

from archc.errors import SpecError
from archc.tasks.base import Example, Labelled, register
from archc.tasks.gnn import EDGE_INDEX, GraphTask, model_roles
from archc.labels import GRAPH_CLASSES


@register
class GraphClassification(GraphTask):
    """Per-graph classes: each step collates batch_size graphs into x, edge_index and a batch vector."""

    kind = "graph_classification"
    data_task = GRAPH_CLASSES

    @classmethod
    def check_inputs(cls, graph, spec) -> None:
        """The graph inputs, and a batch input: the graph id of every node."""
        super().check_inputs(graph, spec)
        if "batch" not in model_roles(graph.inputs):
            raise SpecError("graph_classification expects a batch input: the graph id of every node, int64 "
                            "[nodes] with vocab = \"graphs\"", where="inputs",
                            hint="pool per graph with global_mean_pool from [features, batch]")

    @classmethod
    def labelled(cls, ds, part, roles, what) -> Labelled:
        """The split's graphs collated into one disjoint union, one label per graph."""
        from archc.data.gnn import feeds_for
        return Labelled(feeds_for(ds, part.x, roles), part.y, f"{what}, {len(part)} graphs")

    @classmethod
    def example(cls) -> Example:
        inputs = {"x": {"shape": ["nodes", 7], "batched": False}, "edge_index": EDGE_INDEX,
                  "batch": {"shape": ["nodes"], "dtype": "int64", "vocab": "graphs", "batched": False}}
        return Example({"archc": 1, "model": {"name": "tiny-pool"}, "inputs": inputs,
                        "axes": {"nodes": 60, "edges": 200, "graphs": 4}, "task": {"kind": "graph_classification"},
                        "layers": [{"id": "gcn1", "op": "gcn_conv", "from": ["x", "edge_index"], "out_features": 8,
                                    "act": "relu"},
                                   {"op": "global_mean_pool", "from": ["gcn1", "batch"]},
                                   {"op": "linear", "out_features": 2}],
                        "train": {"epochs": 1, "batch_size": 8},
                        "data": {"source": "graph:synthetic?graphs=40"}},
                       infer=(("--input", "graph:synthetic?graphs=40"),))

    split = "graphs"  # one example per graph (archc.train.gnn.GraphSplit)
