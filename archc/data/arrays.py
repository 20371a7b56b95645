"""Helpers shared by the loaders: labels to class ids, features to float32/int64, arrays to a split Dataset."""
from __future__ import annotations

import numpy as np

from archc.data.base import Splits
from archc.data.columns import FLOAT32_MAX
from archc.data.dataset import Dataset, Split, finish, split_indices, subset
from archc.errors import DataError
from archc.labels import CLASSES, TARGETS


MAX_CLASS_ID = 1 << 20  # numbered class labels 0..max: more classes than any output archc builds is a mistake


def classes_from_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Map raw labels to 0..K-1: strings sort by text, integer-valued numbers keep their values as 0..max."""
    if y.dtype.kind in "USO":
        names = sorted({str(v) for v in y.tolist()})
        lookup = {n: i for i, n in enumerate(names)}
        return np.array([lookup[str(v)] for v in y.tolist()], dtype=np.int64), names
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            bad = y[~(np.isfinite(y) & (y == np.round(y)))][0]
            raise DataError(f"expected integer class labels, received {bad.item()!r}", where=where,
                            hint=f"use task='{TARGETS}' for continuous targets")
    if y.size and y.dtype.kind in "iuf":  # checked before the cast: a uint64 or float beyond int64 wraps
        low, high = y.min(), y.max()
        if low < 0:
            raise DataError(f"expected class labels >= 0, received {low.item()!r}", where=where)
        if high >= MAX_CLASS_ID:  # numbered classes are 0..max: the names list is max + 1 long
            raise DataError(f"expected class labels below {MAX_CLASS_ID:,} (a numbered label is its class's "
                            f"output position), received {high.item()!r}", where=where,
                            hint="number the classes 0..K-1, or store the labels as text to name the classes")
    y = y.astype(np.int64)
    return y, [str(i) for i in range(int(y.max()) + 1 if y.size else 0)]


def _float32(a: np.ndarray, what: str, where: str) -> np.ndarray:
    """A float32 copy; a finite value beyond float32's range is a DataError naming its example (not numpy's
    overflow warning and an inf)."""
    if a.dtype.kind == "f" and a.dtype.itemsize > 4 and a.size:
        big = np.isfinite(a) & (np.abs(a) > FLOAT32_MAX)
        if big.any():
            at = tuple(int(i) for i in np.argwhere(big)[0])
            raise DataError(f"expected {what} within float32's range (magnitude at most {FLOAT32_MAX:.4g}), "
                            f"received {float(a[at]):g} at example {at[0]}", where=where)
    return a.astype(np.float32)


def as_features(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 → float32 in [0, 1] (images); other integers → int64 token ids; floats/bools → float32."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    if x.dtype.kind in "iu":
        return x.astype(np.int64)
    if x.dtype.kind in "fb":
        return _float32(x, "features", where)
    raise DataError(f"expected numeric features, received an array of dtype {x.dtype}", where=where)


def labels_for_task(y: np.ndarray, task: str | None, classes: list[str] | None,
                    where: str) -> tuple[np.ndarray, list[str] | None, str]:
    """Decide the task (forced, or from y's dtype) and convert y: int64 class ids or float32 targets."""
    if task is None:
        task = CLASSES if (y.dtype.kind in "iuUSOb" or classes is not None) else TARGETS
    if task == TARGETS:
        if y.dtype.kind not in "iufb":
            raise DataError(f"expected numeric regression targets, received dtype {y.dtype}", where=where)
        return _float32(y, "regression targets", where), None, task
    labels, derived = classes_from_labels(y, where)
    return labels, (classes if classes is not None else derived), task


def split_rows(n: int, y: np.ndarray, task: str, splits: Splits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) sorted row indices of n examples: stratified by the labels y for classification, so a
    source that splits rows before building its features (csv: columns) cuts the same rows as from_arrays."""
    test_idx, val_idx, train_idx = split_indices(n, [splits.test_fraction, splits.val_fraction], splits.seed,
                                                 y if task == CLASSES else None)
    return train_idx, val_idx, test_idx


def from_arrays(name: str, x: np.ndarray, y: np.ndarray, *, classes: list[str] | None, task: str,
                splits: Splits, test: Split | None = None) -> Dataset:
    """Split prepared arrays x (N, ...) and y (N,) into train/val/test (test carved out only when not given)."""
    if len(x) != len(y):
        raise DataError(f"expected as many labels as examples, received {len(x)} examples and {len(y)} labels",
                        where=name)
    if len(x) == 0:
        raise DataError("expected at least one example, received none", where=name)
    whole = Split(x, y, np.arange(len(x)))  # each example's position in the source: infer's row
    if test is None:
        train_idx, val_idx, test_idx = split_rows(len(x), y, task, splits)
        test = subset(whole, test_idx)  # of a lazy x: a view, like train and val (nothing decoded here)
    else:
        val_idx, train_idx = split_indices(len(x), [splits.val_fraction], splits.seed,
                                           y if task == CLASSES else None)
    return finish(name, subset(whole, train_idx), subset(whole, val_idx), test, classes, task)
