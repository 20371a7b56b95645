"""The data's classes against a model's labels: which output position each class of a Dataset is (numpy only).

A Dataset's `classes` name its class ids 0..K-1 (CSV target values, image folder names, a set's target names).
Classes are matched to labels by name, so a CSV of `class_2, class_0, ...` or folders sorting as `eight, five,
...` train and score under the labels they carry, in any order. Classes whose names are all whole numbers
("0", "7": integer targets) are *numbered*: against labels that are names ("cat", "dog") the number is the
output position; against numbered labels they match by name like any other.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from archc.data.dataset import Dataset, Split

_WHOLE = re.compile(r"(0|[1-9][0-9]*)")


def numbered(names: Sequence[str]) -> bool:
    """True when every name is a whole number written plainly ('0', '12'): integer class values."""
    return bool(names) and all(_WHOLE.fullmatch(n) for n in names)


@dataclass(frozen=True)
class Match:
    """Where a dataset's classes sit among labels: each class's position (-1: none), the labels no class
    matched (`missing`) and the classes no label matched (`unknown`)."""

    positions: np.ndarray
    missing: list[str]
    unknown: list[str]
    by_value: bool  # numbered classes placed by their value (unknown ones lie beyond the labels' count)


def match(classes: Sequence[str], labels: Sequence[str]) -> Match:
    """The output position of each class among `labels`: by name, or by value for numbered classes against
    labels that are names."""
    by_value = numbered(classes) and not numbered(labels)
    if by_value:
        pos = [int(c) if int(c) < len(labels) else -1 for c in classes]
        taken = set(pos)
        missing = [label for i, label in enumerate(labels) if i not in taken]
    else:
        index = {label: i for i, label in enumerate(labels)}
        pos = [index.get(c, -1) for c in classes]
        present = set(classes)
        missing = [label for label in labels if label not in present]
    unknown = [c for c, p in zip(classes, pos) if p < 0]
    return Match(np.array(pos, dtype=np.int64), missing, unknown, by_value)


def reindex(dataset: Dataset, positions: np.ndarray, labels: Sequence[str]) -> Dataset:
    """The dataset with class id i renumbered to positions[i] and `labels` as its classes (ids < 0, unscored
    examples, stay as they are)."""
    def one(s: Split) -> Split:
        y = np.asarray(s.y)
        return dataclasses.replace(s, y=np.where(y >= 0, positions[np.maximum(y, 0)], y).astype(y.dtype, copy=False))
    return dataclasses.replace(dataset, train=one(dataset.train), val=one(dataset.val), test=one(dataset.test),
                               classes=list(labels))


def reorder_columns(dataset: Dataset, positions: np.ndarray, labels: Sequence[str]) -> Dataset:
    """The dataset with target column i moved to column positions[i] (every position taken once) and `labels`
    as its names: multilabel's [N, labels] rows."""
    order = np.argsort(positions)  # new column j is old column order[j]

    def one(s: Split) -> Split:
        return dataclasses.replace(s, y=np.asarray(s.y)[:, order]) if np.ndim(s.y) == 2 else s
    return dataclasses.replace(dataset, train=one(dataset.train), val=one(dataset.val), test=one(dataset.test),
                               classes=list(labels))


def show(names: Sequence[str], limit: int = 8) -> str:
    """"'a', 'b', 'c'" for messages, cut after `limit` names."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
