"""`archc infer MODEL --input SOURCE`: run a model on a data source's split and score it (numpy + ORT only)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archc.errors import InputError
from archc.runtime.present import probabilities, task_kind
from archc.runtime.session import Model

CLASS_TASKS = ("classification", "node_classification", "graph_classification")


def is_source(text: str) -> bool:
    """'sklearn:digits' style data sources of a registered scheme (an existing file of that name is read as a
    file instead)."""
    from archc.data import REGISTRY

    scheme, sep, arg = text.partition(":")
    return bool(sep and arg) and scheme in REGISTRY and not Path(text).exists()


@dataclass
class Labelled:
    feeds: dict[str, np.ndarray]
    y: np.ndarray
    description: str


def load_split(model: Model, source: str, split: str = "test") -> Labelled:
    """The split of `source` the model was scored on in training (split settings from the spec's [data])."""
    from archc.data import load

    if source.startswith("graph:"):
        return graph_split(model, source, split)
    if len(model.inputs) != 1:
        raise InputError(f"expected a single-input model to read a data source, received inputs "
                         f"{', '.join(model.inputs)}", hint="pass an .npz with one array per input")
    spec = json.loads(model.metadata.get("archc.spec", "{}") or "{}")
    data = spec.get("data") or {}
    kind = task_kind(model)
    task = kind if kind in ("classification", "regression", "language_model") else None
    ds = load(source, task=task, target=data.get("target"), val_fraction=data.get("val_fraction", 0.1),
              test_fraction=data.get("test_fraction", 0.2), seed=data.get("split_seed", 0))
    part = getattr(ds, split)
    if len(part) == 0:
        raise InputError(f"expected examples in the {split} split of {source}, received none")
    (name,) = model.inputs
    return Labelled({name: part.x}, part.y, f"{source}, {split} split, {len(part)} examples")


def graph_split(model: Model, source: str, split: str = "test") -> Labelled:
    """A graph: source for a node or graph classifier: node tasks feed the whole graph and label only the
    split's nodes (-1 elsewhere, not scored); graph tasks feed the split's graphs collated."""
    from archc.data import load
    from archc.data.gnn import feeds_for, input_roles

    spec = json.loads(model.metadata.get("archc.spec", "{}") or "{}")
    data = spec.get("data") or {}
    kind = task_kind(model)
    if kind not in ("node_classification", "graph_classification"):
        raise InputError(f"expected a node_classification or graph_classification model to read {source}, "
                         f"received task {kind!r}")
    ds = load(source, task=kind, val_fraction=data.get("val_fraction", 0.1),
              test_fraction=data.get("test_fraction", 0.2), seed=data.get("split_seed", 0))
    part = getattr(ds, split)
    if len(part) == 0:
        raise InputError(f"expected examples in the {split} split of {source}, received none")
    roles = input_roles({n: (s.shape, s.dtype) for n, s in model.inputs.items()})
    if kind == "graph_classification":
        return Labelled(feeds_for(ds, part.x, roles), part.y, f"{source}, {split} split, {len(part)} graphs")
    y = np.full(len(ds.graphs.x), -1, dtype=np.int64)
    y[part.x] = part.y
    return Labelled(feeds_for(ds, None, roles), y,
                    f"{source}, {split} split, {len(part)} of {len(y)} nodes scored")


def score(model: Model, outputs: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """Accuracy for classification kinds (labels < 0 are not scored); MSE and MAE for regression (the task's
    output against the labels)."""
    name = next(iter(outputs))
    values = outputs[name]
    kind = task_kind(model)
    if kind in CLASS_TASKS:
        sig = model.outputs.get(name)
        probs = probabilities(values, getattr(sig, "kind", None))
        keep = y >= 0
        return {"accuracy": float(np.mean(probs.argmax(-1)[keep] == y[keep]))}
    pred = values.reshape(len(y), -1).astype(np.float64)
    target = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if pred.shape != target.shape:
        raise InputError(f"expected outputs shaped like the labels {list(target.shape)}, received {list(pred.shape)}")
    return {"mse": float(np.mean((pred - target) ** 2)), "mae": float(np.mean(np.abs(pred - target)))}
