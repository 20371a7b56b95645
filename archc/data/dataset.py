"""Dataset containers, validation, deterministic splitting and normalization statistics (numpy only)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from archc.data.lazy import Lazy, is_lazy, take
from archc.errors import DataError
from archc.labels import CLASSES

if TYPE_CHECKING:
    from archc.data.columns import Table
    from archc.data.tabular import RawTable

@dataclass
class Split:
    """One split: x float32 (int64 for token ids), y int64 (classification) or float32 (regression); x is a Lazy
    (archc.data.lazy) when the source reads its examples per batch."""

    x: "np.ndarray | Lazy"
    y: np.ndarray
    # Each example's position in the source (what `archc infer` writes as its row); None: not known.
    index: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Dataset:
    """A loaded data source with train/val/test splits."""

    name: str
    train: Split
    val: Split
    test: Split
    # The data's classes: the name of each class id 0..K-1 (or of each target column, a multilabel npz's);
    # training and scoring match them to a model's labels by name (archc/data/classes.py). None: no names.
    classes: list[str] | None
    example_shape: tuple[int, ...]
    task: str
    # A tabular source read by declared columns: the preprocessing fitted on the training split (x holds its
    # encoded rows); None for every other source.
    # (keyword-only: subclasses add positional fields of their own).
    table: "Table | None" = field(default=None, kw_only=True)
    # What the loader did that the user should hear of (files skipped, images converted); printed by train and infer.
    notes: list[str] = field(default_factory=list, kw_only=True)
    # Each example's file, relative to the source's folder, by position in the source (images:); None otherwise.
    names: list[str] | None = field(default=None, kw_only=True)
    # A csv: source's feature columns, by name, in x's order (the ONNX's archc.features: infer matches a CSV's
    # header to them by name); None for every other source.
    features: list[str] | None = field(default=None, kw_only=True)
    # A csv: source read by declared columns: the test split's cells (the declared columns' and the target's) as
    # read, so `archc train`'s report scores them as `archc infer` reads them without reading the file again.
    held: "RawTable | None" = field(default=None, kw_only=True)


def check_fractions(val_fraction: float, test_fraction: float, where: str) -> None:
    """Fractions must be in [0, 1) and leave something to train on."""
    for label, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= float(f) < 1.0):
            raise DataError(f"{label}: expected a number in [0, 1), received {f!r}", where=where)
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"expected val_fraction + test_fraction < 1, received {val_fraction} + {test_fraction}",
                        where=where, hint="leave some examples for training")


def _stratified_order(y: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices ordered so that every prefix holds each class in about its overall proportion."""
    perm = rng.permutation(n)
    if y is None:
        return perm
    labels = y[perm]
    # Stable sort by label keeps the random order inside each class; the within-class rank over the
    # class size then interleaves classes evenly, and a random jitter breaks ties between classes.
    by_label = np.argsort(labels, kind="stable")
    sorted_labels = labels[by_label]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    counts = np.searchsorted(sorted_labels, sorted_labels, side="right") - starts
    rank = np.arange(n) - starts
    key = (rank + rng.random(n)) / counts
    return perm[by_label[np.argsort(key, kind="stable")]]


def split_indices(n: int, fractions: Sequence[float], seed: int,
                  y: np.ndarray | None = None) -> list[np.ndarray]:
    """Deterministically split range(n) into len(fractions)+1 sorted index arrays (last is the rest)."""
    order = _stratified_order(y, n, np.random.default_rng(seed))
    parts, start = [], 0
    for f in fractions:
        k = int(round(n * f))
        if f > 0 and k == 0 and n - start > 1:
            k = 1  # a requested split should not silently vanish on a small set
        parts.append(np.sort(order[start:start + k]))
        start += k
    parts.append(np.sort(order[start:]))
    return parts


def subset(split: Split, idx: np.ndarray) -> Split:
    """The examples of `split` at `idx` (of a lazy split: a view, nothing read), with their positions."""
    return Split(take(split.x, idx), split.y[idx], None if split.index is None else split.index[idx])


def check_xy(x: np.ndarray, y: np.ndarray, where: str, split: str) -> None:
    """Lengths agree, the set is non-empty and float features are finite."""
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{split}: expected as many labels as examples, received {x.shape[0]} examples "
                        f"and {y.shape[0]} labels", where=where)
    if x.dtype.kind == "f" and not is_lazy(x) and not np.isfinite(x).all():  # a lazy source checks as it reads
        bad = int(np.argmin(np.isfinite(x.reshape(len(x), -1)).all(axis=1)))
        raise DataError(f"{split}: expected finite features, received NaN or inf in example {bad}", where=where)


def check_labels(y: np.ndarray, classes: list[str] | None, task: str, where: str, split: str) -> None:
    """Class labels lie in [0, len(classes)); regression targets are finite."""
    if task == CLASSES:
        assert classes is not None
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise DataError(f"{split}: expected labels in 0..{len(classes) - 1} ({len(classes)} classes), "
                            f"received {bad}", where=where)
    elif y.size and not np.isfinite(y).all():
        raise DataError(f"{split}: expected finite regression targets, received NaN or inf", where=where)


def finish(name: str, train: Split, val: Split, test: Split, classes: list[str] | None, task: str) -> Dataset:
    """Validate the three splits and build the Dataset."""
    if len(train) == 0:
        raise DataError("expected at least one training example, received none", where=name)
    for label, s in (("train", train), ("val", val), ("test", test)):
        check_xy(s.x, s.y, name, label)
        check_labels(s.y, classes, task, name, label)
    shape = tuple(int(d) for d in train.x.shape[1:])
    for label, s in (("val", val), ("test", test)):
        if len(s) and tuple(s.x.shape[1:]) != shape:
            raise DataError(f"{label}: expected examples shaped {list(shape)} (as in train), "
                            f"received {list(s.x.shape[1:])}", where=name)
    return Dataset(name, train, val, test, classes, shape, task)


def check_shape(dataset: Dataset, expected_shape: Sequence[int | str | None], input_name: str | None = None) -> None:
    """Raise DataError when the per-example shape differs from the spec's (None/str dims match anything)."""
    got = list(dataset.example_shape)
    want = list(expected_shape)
    ok = len(got) == len(want) and all(not isinstance(w, int) or w == g for w, g in zip(want, got))
    if not ok:
        origin = f" (the spec's input '{input_name}')" if input_name else ""
        raise DataError(f"expected examples shaped {want}{origin}, received {got}", where=f"data {dataset.name}")


NORMALIZATION_SAMPLE = 4096  # examples a lazy split's statistics are computed on


def _readable(x: Lazy, positions: np.ndarray, skipped: list[str]) -> np.ndarray:
    """The examples of `x` at `positions` that can be read, stacked; the others' errors appended to `skipped`."""
    out = np.empty((len(positions), *x.example_shape), dtype=x.dtype)
    kept = 0
    for p in positions.tolist():
        try:
            out[kept] = x.read(p)
        except DataError as e:
            skipped.append(f"{e.where}: {e.message}" if e.where else e.message)
            continue
        kept += 1
    return out[:kept]


def normalization(split: Split, chunk: int = 4096, seed: int = 0, skipped: list[str] | None = None) -> dict:
    """Per-channel (C, ...) or per-feature (F,) mean/std as float lists; std floored at 1e-6. A lazy split's are
    computed on at most NORMALIZATION_SAMPLE of its examples, drawn with `seed` (its whole set when fewer); with
    `skipped` a list, an example that cannot be read is left out and its DataError's text appended to it
    ([data] on_error = "skip"), else the DataError stops the run before training, naming the file."""
    x = split.x
    if is_lazy(x):
        n = len(x)
        pick = np.sort(np.random.default_rng(seed).permutation(n)[:NORMALIZATION_SAMPLE]) if n > NORMALIZATION_SAMPLE \
            else np.arange(n)
        return _lazy_normalization(x, pick, skipped)
    if x.dtype.kind != "f":
        raise DataError(f"expected float features to normalize, received {x.dtype} (token ids?)")
    if len(x) == 0:
        raise DataError("expected at least one example to compute normalization, received none")
    # (N, F) and (N, C, H, W) alike: axis 1 is the feature/channel axis; everything else is pooled.
    flat = x.reshape(len(x), 1, -1) if x.ndim == 1 else x.reshape(len(x), x.shape[1], -1)
    count = flat.shape[0] * flat.shape[2]
    # Chunked float64 passes: exact enough and no full-size float64 copy of MNIST-size data.
    total = np.zeros(flat.shape[1])
    for i in range(0, len(flat), chunk):
        total += flat[i:i + chunk].sum(axis=(0, 2), dtype=np.float64)
    mean = total / count
    sq = np.zeros(flat.shape[1])
    for i in range(0, len(flat), chunk):
        sq += ((flat[i:i + chunk].astype(np.float64) - mean[None, :, None]) ** 2).sum(axis=(0, 2))
    std = np.maximum(np.sqrt(sq / count), 1e-6)
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "per": "feature" if x.ndim <= 2 else "channel"}


LAZY_CHUNK = 256  # examples of a lazy split read at a time for its statistics (never the whole sample at once)


def _lazy_normalization(x: Lazy, pick: np.ndarray, skipped: list[str] | None = None) -> dict:
    """normalization() of a lazy split's examples at `pick`, read LAZY_CHUNK at a time: each chunk's mean and sum of
    squared deviations (float64, two passes over the chunk), merged exactly (Chan et al.'s pairwise update).
    `skipped`: as in normalization() (unreadable examples left out and named in it)."""
    if x.dtype.kind != "f":
        raise DataError(f"expected float features to normalize, received {x.dtype} (token ids?)")
    if len(pick) == 0:
        raise DataError("expected at least one example to compute normalization, received none")
    count, mean, m2 = 0, None, None
    for i in range(0, len(pick), LAZY_CHUNK):
        part = x[pick[i:i + LAZY_CHUNK]] if skipped is None else _readable(x, pick[i:i + LAZY_CHUNK], skipped)
        if not len(part):
            continue
        flat = part.reshape(len(part), 1, -1) if part.ndim == 1 else part.reshape(len(part), part.shape[1], -1)
        k = flat.shape[0] * flat.shape[2]
        m = flat.sum(axis=(0, 2), dtype=np.float64) / k
        d2 = ((flat.astype(np.float64) - m[None, :, None]) ** 2).sum(axis=(0, 2))
        if mean is None:
            count, mean, m2 = k, m, d2
            continue
        delta = m - mean
        total = count + k
        mean = mean + delta * (k / total)
        m2 = m2 + d2 + delta ** 2 * (count * k / total)
        count = total
    if mean is None:
        raise DataError("expected at least one readable example to compute normalization, received none")
    std = np.maximum(np.sqrt(m2 / count), 1e-6)
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "per": "feature" if x.ndim <= 2 else "channel"}
