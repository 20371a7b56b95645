"""`sklearn:NAME`: scikit-learn's bundled toy sets (shipped with the package, never downloaded)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from archc.data.arrays import from_arrays, labels_for_task
from archc.data.base import Example, Source, Splits, register
from archc.data.dataset import Dataset
from archc.errors import DataError
from archc.labels import CLASSES, TARGETS

LOADERS = {"digits": "load_digits", "iris": "load_iris", "wine": "load_wine",
           "breast_cancer": "load_breast_cancer", "diabetes": "load_diabetes"}


@register
class SklearnSet(Source):
    """scikit-learn's bundled sets: digits (1x8x8 images in [0, 1]), iris, wine, breast_cancer, diabetes."""

    scheme = "sklearn"
    names = tuple(LOADERS)
    tasks = (CLASSES, TARGETS)

    def load(self, arg: str, splits: Splits, task: str | None = None) -> Dataset:
        """diabetes is regression, the others classification (each can be asked for the other)."""
        try:
            import sklearn.datasets as skd  # lazy: optional dependency, slow to import
        except ImportError:
            raise DataError("scikit-learn is not installed", where=self.name, hint="pip install scikit-learn") from None
        bunch = getattr(skd, LOADERS[arg])()
        x = np.asarray(bunch.data, dtype=np.float32)
        if arg == "digits":
            x = (x / np.float32(16)).reshape(-1, 1, 8, 8)  # 4-bit pixels → [0, 1] images
        y = np.asarray(bunch.target)
        names = getattr(bunch, "target_names", None)
        classes = [str(c) for c in names] if names is not None and arg != "diabetes" else None
        y, classes, task = labels_for_task(y, task or (TARGETS if arg == "diabetes" else CLASSES),
                                           classes, self.name)
        return from_arrays(self.name, x, y, classes=classes, task=task, splits=splits)

    @classmethod
    def example(cls, folder: Path) -> Example:
        return Example("sklearn:iris", CLASSES, (4,), 150)
