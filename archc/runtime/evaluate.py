"""`archc infer MODEL --input SOURCE`: run a model on a data source's split and score it (numpy + ORT only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from archc.runtime.session import Model
from archc.tasks.base import Labelled, for_model

__all__ = ["Labelled", "is_source", "load_split", "score"]


def is_source(text: str) -> bool:
    """'sklearn:digits' style data sources of a registered scheme (an existing file of that name is read as a
    file instead)."""
    from archc.data import REGISTRY

    scheme, sep, arg = text.partition(":")
    return bool(sep and arg) and scheme in REGISTRY and not Path(text).exists()


def load_split(model: Model, source: str, split: str = "test", target: str | None = None) -> Labelled:
    """The split of `source` the model was scored on in training, read as its task kind reads data sources
    (archc.tasks: one input fed a table of examples, or whole graphs). A model with a fitted table reads a csv:
    source's split by column name (archc.runtime.tabular)."""
    from archc.runtime.pixels import as_pixels
    from archc.runtime.tabular import source_split

    rows = source_split(model, source, split, target)
    return rows if rows is not None else as_pixels(model, for_model(model).load_split(model, source, split, target))


def score(model: Model, outputs: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """The outputs against the labels, by the model's task kind: accuracy for classifiers (labels < 0 are not
    scored), MSE and MAE for regression, bits per byte for language models, ..."""
    return for_model(model).score(model, outputs, y)
