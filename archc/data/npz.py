"""`npz:FILE`: numpy arrays x and y, optionally x_test, y_test and classes."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from archc.data.arrays import as_features, from_arrays, labels_for_task
from archc.data.base import Example, Source, Splits, register
from archc.data.dataset import Dataset, Split
from archc.errors import DataError
from archc.util import load_arrays, why_not_a_file
from archc.labels import CLASSES, TARGETS


@register
class NpzArrays(Source):
    """An .npz with x [N, ...] and y [N] (regression: or [N, K]), optionally x_test and y_test (the test split) and
    classes (names of y's classes, or of its K columns: multilabel's labels)."""

    scheme = "npz"
    argument = "FILE"
    takes_path = True
    tasks = (CLASSES, TARGETS)

    def load(self, arg: Path, splits: Splits, task: str | None = None) -> Dataset:
        """Integer or string y: classification; float y: regression (unless `task` says otherwise)."""
        name = self.name
        if not arg.is_file():
            raise DataError(f"expected an .npz file, received {str(arg)!r}{why_not_a_file(arg)}", where=name)
        try:
            with load_arrays(arg) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"expected a readable .npz file, received one that fails to load ({e})",
                            where=name) from None
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise DataError(f"expected arrays 'x' and 'y', received keys {sorted(arrays)}", where=name,
                            hint=f"missing {', '.join(missing)}")
        if ("x_test" in arrays) != ("y_test" in arrays):
            raise DataError(f"expected both 'x_test' and 'y_test' or neither, received keys {sorted(arrays)}",
                            where=name)
        classes = [str(c) for c in arrays["classes"].tolist()] if "classes" in arrays else None
        x = as_features(arrays["x"], name)
        for key in ("y", "y_test"):
            if key in arrays and arrays[key].ndim != 1 and not (task == TARGETS and arrays[key].ndim == 2):
                raise DataError(f"expected {key!r} to hold one label (or, for regression, one row of targets) "
                                f"per example, received shape {list(arrays[key].shape)}", where=name)
        y_all = arrays["y"] if "y_test" not in arrays else np.concatenate([arrays["y"], arrays["y_test"]])
        # Convert train and test labels together so string classes get one shared numbering.
        labels, classes, task = labels_for_task(y_all, task, classes, name)
        if task == TARGETS and arrays["y"].ndim == 2 and "classes" in arrays:
            classes = _column_names(arrays["classes"], arrays["y"].shape[1], name)  # multilabel's label names
        y, test = labels[:len(arrays["y"])], None
        if "x_test" in arrays:
            test = Split(as_features(arrays["x_test"], name), labels[len(arrays["y"]):],
                         np.arange(len(arrays["x_test"])))  # infer's row: the position in x_test
        return from_arrays(name, x, y, classes=classes, task=task, splits=splits, test=test)

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix.lower() == ".npz"

    @classmethod
    def example(cls, folder: Path) -> Example:
        rng = np.random.default_rng(0)
        np.savez(folder / "arrays.npz", x=rng.random((30, 2, 3), dtype=np.float32), y=np.arange(30) % 3,
                 x_test=rng.random((6, 2, 3), dtype=np.float32), y_test=np.arange(6) % 3)
        return Example(f"npz:{folder / 'arrays.npz'}", CLASSES, (2, 3), 36)


def _column_names(names: np.ndarray, width: int, where: str) -> list[str]:
    """The names of y's columns (a multilabel target's labels): one per column."""
    out = [str(c) for c in names.reshape(-1).tolist()]
    if len(out) != width:
        raise DataError(f"expected 'classes' to name the {width} columns of 'y', received {len(out)} names",
                        where=where)
    return out
