"""`load(source)`: parse 'scheme:argument' and dispatch to a loader; sklearn and npz loaders live here."""
from __future__ import annotations

import difflib
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from archc.data.dataset import Dataset, Split, check_fractions, check_task, finish, split_indices, subset
from archc.errors import DataError

# Keyword arguments every loader receives: task, target, val_fraction, test_fraction, seed, root.
Loader = Callable[..., Dataset]


def resolve(arg: str, root: str | Path | None) -> Path:
    """A path argument, relative to `root` when given (e.g. the spec's folder)."""
    p = Path(arg).expanduser()
    return p if p.is_absolute() or root is None else Path(root) / p


def classes_from_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Map raw labels to 0..K-1: strings sort by text, integer-valued numbers keep their values as 0..max."""
    if y.dtype.kind in "USO":
        names = sorted({str(v) for v in y.tolist()})
        lookup = {n: i for i, n in enumerate(names)}
        return np.array([lookup[str(v)] for v in y.tolist()], dtype=np.int64), names
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            bad = y[~(np.isfinite(y) & (y == np.round(y)))][0]
            raise DataError(f"expected integer class labels, received {bad!r}", where=where,
                            hint="use task='regression' for continuous targets")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"expected class labels >= 0, received {int(y.min())}", where=where)
    return y, [str(i) for i in range(int(y.max()) + 1 if y.size else 0)]


def as_features(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 → float32 in [0, 1] (images); other integers → int64 token ids; floats/bools → float32."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    if x.dtype.kind in "iu":
        return x.astype(np.int64)
    if x.dtype.kind in "fb":
        return x.astype(np.float32)
    raise DataError(f"expected numeric features, received an array of dtype {x.dtype}", where=where)


def from_arrays(name: str, x: np.ndarray, y: np.ndarray, *, classes: list[str] | None, task: str,
                val_fraction: float, test_fraction: float, seed: int,
                test: Split | None = None) -> Dataset:
    """Split prepared arrays into train/val/test (test carved out only when `test` is not given)."""
    if len(x) != len(y):
        raise DataError(f"expected as many labels as examples, received {len(x)} examples and {len(y)} labels",
                        where=name)
    if len(x) == 0:
        raise DataError("expected at least one example, received none", where=name)
    strat = y if task == "classification" else None
    if test is None:
        test_idx, val_idx, train_idx = split_indices(len(x), [test_fraction, val_fraction], seed, strat)
        test = Split(x[test_idx], y[test_idx])
    else:
        val_idx, train_idx = split_indices(len(x), [val_fraction], seed, strat)
    whole = Split(x, y)
    return finish(name, subset(whole, train_idx), subset(whole, val_idx), test, classes, task)


def _labels_for_task(y: np.ndarray, task: str | None, classes: list[str] | None,
                     where: str) -> tuple[np.ndarray, list[str] | None, str]:
    """Decide the task (forced or from y's dtype) and convert y accordingly."""
    if task is None:
        task = "classification" if (y.dtype.kind in "iuUSOb" or classes is not None) else "regression"
    if task == "regression":
        if y.dtype.kind not in "iufb":
            raise DataError(f"expected numeric regression targets, received dtype {y.dtype}", where=where)
        return y.astype(np.float32), None, task
    labels, derived = classes_from_labels(y, where)
    return labels, (classes if classes is not None else derived), task


# --- sklearn -------------------------------------------------------------------------------------------------

SKLEARN_SETS = {"digits": "load_digits", "iris": "load_iris", "wine": "load_wine",
                "breast_cancer": "load_breast_cancer", "diabetes": "load_diabetes"}


def load_sklearn(arg: str, *, task: str | None, target: str | None, val_fraction: float,
                 test_fraction: float, seed: int, root: str | Path | None) -> Dataset:
    """scikit-learn's bundled toy sets (shipped with the package, never downloaded)."""
    name = f"sklearn:{arg}"
    if arg not in SKLEARN_SETS:
        close = difflib.get_close_matches(arg, SKLEARN_SETS, n=3)
        raise DataError(f"expected one of {', '.join(SKLEARN_SETS)}, received {arg!r}", where=name,
                        hint=f"did you mean {', '.join(close)}?" if close else "")
    try:
        import sklearn.datasets as skd  # lazy: optional dependency, slow to import
    except ImportError:
        raise DataError("scikit-learn is not installed", where=name, hint="pip install scikit-learn") from None
    bunch = getattr(skd, SKLEARN_SETS[arg])()
    x = np.asarray(bunch.data, dtype=np.float32)
    if arg == "digits":
        x = (x / np.float32(16)).reshape(-1, 1, 8, 8)  # 4-bit pixels → [0, 1] images
    y = np.asarray(bunch.target)
    names = getattr(bunch, "target_names", None)
    classes = [str(c) for c in names] if names is not None and arg != "diabetes" else None
    y, classes, task = _labels_for_task(y, task or ("regression" if arg == "diabetes" else "classification"),
                                        classes, name)
    return from_arrays(name, x, y, classes=classes, task=task, val_fraction=val_fraction,
                       test_fraction=test_fraction, seed=seed)


# --- npz -----------------------------------------------------------------------------------------------------

def load_npz(arg: str, *, task: str | None, target: str | None, val_fraction: float,
             test_fraction: float, seed: int, root: str | Path | None) -> Dataset:
    """An .npz with x, y and optional x_test, y_test, classes."""
    name = f"npz:{arg}"
    path = resolve(arg, root)
    if not path.is_file():
        raise DataError(f"expected an .npz file, received {str(path)!r}, which does not exist", where=name)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"expected a readable .npz file, received one that fails to load ({e})", where=name) from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"expected arrays 'x' and 'y', received keys {sorted(arrays)}", where=name,
                        hint=f"missing {', '.join(missing)}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"expected both 'x_test' and 'y_test' or neither, received keys {sorted(arrays)}", where=name)
    classes = [str(c) for c in arrays["classes"].tolist()] if "classes" in arrays else None
    x = as_features(arrays["x"], name)
    for key in ("y", "y_test"):
        if key in arrays and arrays[key].ndim != 1 and not (task == "regression" and arrays[key].ndim == 2):
            raise DataError(f"expected {key!r} to hold one label (or, for regression, one row of targets) per "
                            f"example, received shape {list(arrays[key].shape)}", where=name)
    y_all = arrays["y"] if "y_test" not in arrays else np.concatenate([arrays["y"], arrays["y_test"]])
    # Convert train and test labels together so string classes get one shared numbering.
    labels, classes, task = _labels_for_task(y_all, task, classes, name)
    y, test = labels[:len(arrays["y"])], None
    if "x_test" in arrays:
        test = Split(as_features(arrays["x_test"], name), labels[len(arrays["y"]):])
    return from_arrays(name, x, y, classes=classes, task=task, val_fraction=val_fraction,
                       test_fraction=test_fraction, seed=seed, test=test)


# --- registry ------------------------------------------------------------------------------------------------

def _registry() -> dict[str, Loader]:
    """{scheme: loader}; imported here so each format stays in its own module."""
    from archc.data.gnn import load_graph
    from archc.data.idx import load_idx
    from archc.data.images import load_images
    from archc.data.tabular import load_csv
    from archc.data.text import load_text
    return {"sklearn": load_sklearn, "idx": load_idx, "csv": load_csv, "npz": load_npz, "images": load_images,
            "text": load_text, "graph": load_graph}


def load(source: str, *, task: str | None = None, target: str | None = None, val_fraction: float = 0.1,
         test_fraction: float = 0.2, seed: int = 0, root: str | Path | None = None,
         context: int | None = None) -> Dataset:
    """Load 'scheme:argument' (sklearn:, idx:, csv:, npz:, images:, text:, graph:) into a split Dataset; paths are
    relative to root. `context` (tokens per window) is for text: sources (language models); other schemes ignore it."""
    registry = _registry()
    known = ", ".join(f"{s}:" for s in registry)
    scheme, sep, arg = source.partition(":")
    if not sep or not arg:
        raise DataError(f"expected a data source 'scheme:argument' (one of {known}), received {source!r}",
                        where="data", hint=_guess_scheme(source))
    if scheme not in registry:
        close = difflib.get_close_matches(scheme, registry, n=3)
        raise DataError(f"unknown data scheme {scheme!r}: expected one of {known}", where=source,
                        hint=f"did you mean {', '.join(c + ':' for c in close)}?" if close else "")
    if scheme not in ("text", "graph"):  # text: and graph: sources check their own tasks (language_model, graphs)
        check_task(task, source)
    check_fractions(val_fraction, test_fraction, source)
    if target is not None and scheme != "csv":
        raise DataError(f"expected no target for a {scheme}: source, received target={target!r}", where=source,
                        hint="target= names a column of a csv: source")
    extra = {"context": context} if scheme == "text" else {}
    return registry[scheme](arg, task=task, target=target, val_fraction=val_fraction,
                            test_fraction=test_fraction, seed=seed, root=root, **extra)


def _guess_scheme(source: str) -> str:
    """A hint naming the scheme a bare path most likely wants."""
    suffix = Path(source).suffix.lower()
    guess = {".csv": "csv", ".npz": "npz"}.get(suffix)
    if guess is None and Path(source).is_dir():
        guess = "idx" if any("idx" in p.name for p in Path(source).iterdir()) else "images"
    return f"did you mean '{guess}:{source}'?" if guess else ""
