"""What the graph task kinds share: classification over whole-graph inputs fed by role (node features,
edge_index, graph ids), scored by `archc infer` on a graph: source's split."""
from __future__ import annotations

from typing import Any

from archc.errors import DataError, SpecError
from archc.tasks.base import Labelled, data_settings, np, split_of
from archc.tasks.classification import Classification

EDGE_INDEX = {"shape": [2, "edges"], "dtype": "int64", "vocab": "nodes", "batched": False}  # examples' input


def model_roles(graph_inputs: dict[str, Any]) -> dict[str, str]:
    """{role: input name} from {name: TensorType or TensorSig} (x, edge_index, batch; archc.data.gnn's rule)."""
    from archc.data.gnn import input_roles
    return input_roles({n: (t.shape, t.dtype) for n, t in graph_inputs.items()})


class GraphTask(Classification):
    """Classification over whole-graph inputs fed by role (node features, edge_index, graph ids)."""

    own_inputs = True
    modes = ("graph",)
    noun = "graph model"
    mixes_labels = False  # node/graph labels are not mixed (augmentation needs an image input)

    @classmethod
    def check_inputs(cls, graph, spec) -> None:
        """Inputs by role (x float32 [nodes, F], edge_index int64 [2, edges], optional batch); unnormalized."""
        try:
            model_roles(graph.inputs)
        except DataError as e:
            raise SpecError(e.message, where="inputs") from None
        if spec.data is not None and spec.data.normalize:
            raise SpecError(f"expected normalize = false for {cls.kind}, received true", where="data.normalize")

    # ---- infer ----
    @classmethod
    def load_split(cls, model, source: str, split: str = "test", target: str | None = None) -> Labelled:
        """A graph: source's split as whole-graph feeds (see `labelled`)."""
        from archc.data import load

        ds = load(source, task=cls.data_task, **data_settings(model, split, target))  # no graphs: DataError
        ds = cls.match_classes(model, ds, source)
        part = split_of(ds, split, source)
        return cls.labelled(ds, part, model_roles(model.inputs), f"{source}, {split} split")

    @classmethod
    def labelled(cls, ds, part, roles: dict[str, str], what: str) -> Labelled:
        """The feeds and labels of one split (node tasks: the whole graph; graph tasks: the split's graphs)."""
        raise NotImplementedError

    # ---- train ----
    def __init__(self, spec, graph) -> None:
        super().__init__(spec, graph)
        self.roles = model_roles(graph.inputs)
        self.order, self.data_input = list(graph.inputs), None
        self.features = graph.inputs[self.roles["x"]].shape[-1]

    def check(self, dataset) -> None:
        from archc.data.gnn import GraphDataset

        if not isinstance(dataset, GraphDataset) or dataset.task != self.data_task:
            raise DataError(f"expected {self.kind} data from a graph: source, received {dataset.task} data",
                            where=f"data {dataset.name}", hint="e.g. graph:karate, graph:synthetic, graph:FILE.npz")
        if dataset.example_shape != (self.features,):
            raise DataError(f"expected node features [nodes, {self.features}] (the spec's input "
                            f"'{self.roles['x']}'), received [nodes, {dataset.example_shape[0]}]",
                            where=f"data {dataset.name}")
        super().check(dataset)

    def splits(self, dataset, device, build, **reading) -> dict[str, Any]:
        """train/val/test of the graph dataset as this kind's split (train's `build`: archc.train.gnn's)."""
        split = getattr(build, self.split)
        return {k: split(getattr(dataset, k), dataset.graphs, self.roles, device) for k in build.names}

    split = ""  # which of archc.tasks.hooks.SplitBuilders' graph splits: "nodes" or "graphs"

    def forward(self, net, x, y, training):
        out = self.select(net(*x.args(self.order)))                                  # (nodes or graphs, K)
        return (out if x.rows is None else out[x.rows]), y


def unscored(n: int, ids: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Labels for n rows: y at ids, -1 (not scored) elsewhere."""
    out = np.full(n, -1, dtype=np.int64)
    out[ids] = y
    return out
