"""`archc infer MODEL --input SOURCE`: run a model on a data source's split and score it (numpy + ORT only)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archc.errors import InputError
from archc.runtime.present import probabilities, task_kind
from archc.runtime.session import Model

SCHEMES = ("sklearn", "idx", "csv", "npz", "images", "text")


def is_source(text: str) -> bool:
    """'sklearn:digits' style data sources (an existing file of that name is read as a file instead)."""
    scheme, sep, arg = text.partition(":")
    return bool(sep and arg) and scheme in SCHEMES and not Path(text).exists()


@dataclass
class Labelled:
    feeds: dict[str, np.ndarray]
    y: np.ndarray
    description: str


def load_split(model: Model, source: str, split: str = "test") -> Labelled:
    """The split of `source` the model was scored on in training (split settings from the spec's [data])."""
    from archc.data import load

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


def score(model: Model, outputs: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """Accuracy for classification; MSE and MAE for regression (the task's output against the labels)."""
    name = next(iter(outputs))
    values = outputs[name]
    kind = task_kind(model)
    if kind == "classification":
        sig = model.outputs.get(name)
        probs = probabilities(values, getattr(sig, "kind", None))
        return {"accuracy": float(np.mean(probs.argmax(-1) == y))}
    pred = values.reshape(len(y), -1).astype(np.float64)
    target = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if pred.shape != target.shape:
        raise InputError(f"expected outputs shaped like the labels {list(target.shape)}, received {list(pred.shape)}")
    return {"mse": float(np.mean((pred - target) ** 2)), "mae": float(np.mean(np.abs(pred - target)))}
