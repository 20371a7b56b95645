"""`archc infer MODEL --input SOURCE`: run a model on a data source's split and score it (numpy + ORT only)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from archc.runtime.session import Model
from archc.tasks.base import Labelled, for_model

if TYPE_CHECKING:
    from archc.data import Dataset

__all__ = ["Labelled", "is_source", "load_split", "read_split", "score"]


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


def read_split(model: Model, source: str, ds: "Dataset", split: str = "test") -> Labelled | None:
    """`split` of `ds`, which `archc train` read from `source` (its test split, as read, before any normalization),
    as load_split reads it from the source: the run's report reads no file again. None where only the source gives
    it: a tabular model's rows that training did not keep (parquet:), a kind that reads its data itself."""
    from archc.runtime.pixels import as_pixels
    from archc.runtime.tabular import split_rows_of, table_of
    from archc.tasks.base import Task

    table = table_of(model)
    if table is not None and source.startswith(("csv:", "parquet:")):
        if ds.held is None or table.target is None:
            return None
        return split_rows_of(model, table, ds.held, source, split, table.target)
    cls = for_model(model)
    if cls.load_split.__func__ is not Task.load_split.__func__ or len(model.inputs) != 1:  # type: ignore[attr-defined]
        return None
    return as_pixels(model, cls.labelled(model, ds, source, split))


def score(model: Model, outputs: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """The outputs against the labels, by the model's task kind: accuracy for classifiers (labels < 0 are not
    scored), MSE and MAE for regression, bits per byte for language models, ..."""
    return for_model(model).score(model, outputs, y)
