"""Tabular columns: what a spec declares (`Column`), what the training split fixes (`Fitted`), and the encoding
of raw cells into the float row the model reads (`Table.encode`, numpy only: the reference that the ONNX
preprocessing graph and `archc infer` are checked against).

The contract shared by the data loader, the spec/graph passes and the exporter:

- A column is matched by **name**, never by position. A table's columns are encoded in the order the spec declares
  them, each into a contiguous slice of the encoded row (`Table.layout`).
- Cells are text as read from a CSV. A cell is **missing** when, stripped and lower-cased, it is one of
  `MISSING_TOKENS` (empty, NA, N/A, NaN, null, None, ?); a float NaN is missing too.
- Per column, in the encoded row:
  - numeric: one value, `(v - mean) / std` with the training split's statistics when `scale` (else `v`);
  - boolean: one value, 0.0 or 1.0 (`TRUE_TOKENS` / `FALSE_TOKENS`, case-insensitive), scaled like numeric when
    `scale` (off by default for booleans);
  - categorical, `encode = "onehot"`: `slots()` values, 1.0 at the category's index (categories in `Fitted.categories`
    order); an unknown category gives all zeros under `unknown = "ignore"`;
  - categorical, `encode = "embedding"`: ONE value, the category's index as a float (0 .. slots-1); an unknown
    category gives the reserved index `slots()` under `unknown = "ignore"`. The model's first node turns that index
    into `dim` features with an embedding table of `slots() + 1` rows (`Column.width()` counts `dim`;
    `Column.encoded_width()` counts 1).
  - with `indicator = true`, one more value right after the column's own: 1.0 where the cell was missing, else 0.0.
- Missing cells are replaced before encoding by `Fitted.fill` (from `missing`: the train split's mean, median or most
  frequent value, or the spec's `fill` for "constant"); `missing = "error"` refuses them (a located DataError).
- Unknown categories (not among the fitted categories): `unknown = "error"` refuses them, `"ignore"` encodes them as
  above, `"most_frequent"` encodes them as the train split's most frequent category.
- Categories are fixed before any data is seen when the spec lists them (`categories`); otherwise they are learned
  from the training split (`max_categories`: at most that many, so the width is known at validate time; sorted
  by frequency, then by text; a train split with more distinct values is a DataError naming the column).

Nothing here imports torch; the fitted table is JSON (`to_json`/`from_json`), recorded in the run and the ONNX
metadata (`archc.columns`).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Literal, Sequence

import numpy as np

from archc.errors import DataError, describe
from archc.util import FLOAT32_MAX

ColumnType = Literal["numeric", "categorical", "boolean"]
MissingRule = Literal["error", "mean", "median", "most_frequent", "constant"]
UnknownRule = Literal["error", "ignore", "most_frequent"]
Encoding = Literal["onehot", "embedding"]

COLUMN_TYPES: tuple[str, ...] = ("numeric", "categorical", "boolean")
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
TRUE_TOKENS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n", "0", "0.0"})
STATS_MISSING = ("mean", "median")  # numeric (and boolean) only
# A number as a CSV writes it: ASCII digits, an optional sign, fraction and exponent, or inf/nan (any case). Python's
# float() also takes '1_000' and other scripts' digits ('١٢'), which no CSV writer means as a number.
_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE)
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]*,[0-9]+(?:[eE][+-]?[0-9]+)?")
ROW_PREFIX = "archc_row"  # the ONNX values of a model that takes a row are archc_row/<column>/<step>: no column's
                          # name may start with it (archc.export.tabular)


def is_missing(cell: Any) -> bool:
    """A missing cell: a missing token (any case, surrounding blanks ignored), None, or a float NaN."""
    if cell is None:
        return True
    if isinstance(cell, float):
        return math.isnan(cell)
    return str(cell).strip().lower() in MISSING_TOKENS


def number(cell: Any) -> float | None:
    """A cell's value when it is a number (an int or float, or text in the CSV number grammar, surrounding blanks
    ignored), else None. Total: never raises. An integer beyond float64 reads as 1e308 (out of float32's range)."""
    if isinstance(cell, str):  # the common case (a CSV's cells) first; np.str_ too
        text = cell.strip()
        return float(text) if _NUMBER.fullmatch(text) else None
    if isinstance(cell, (bool, np.bool_)):
        return float(cell)
    if isinstance(cell, (int, np.integer)):
        return float(cell) if abs(int(cell)) < 10**308 else (1e308 if cell > 0 else -1e308)
    if isinstance(cell, (float, np.floating)):
        return float(cell)
    return None


def number_problem(value: float) -> str | None:
    """What a parsed number must be to be a float32 feature or target (None: it is one)."""
    if not math.isfinite(value):
        return "a finite number"
    if abs(value) > FLOAT32_MAX:
        return f"a number within float32's range (magnitude at most {FLOAT32_MAX:.4g})"
    return None


def decimal_comma(cell: Any) -> bool:
    """Whether a cell reads as a number written with a decimal comma ('3,45')."""
    return isinstance(cell, str) and _DECIMAL_COMMA.fullmatch(cell.strip()) is not None


DECIMAL_HINT = "a decimal comma? read the file with the csv: option ?decimal=, (e.g. 'csv:FILE?decimal=,')"


@dataclass(frozen=True)
class Column:
    """One declared column of a tabular input (the spec's `[inputs.NAME.columns]` entry)."""

    name: str
    type: ColumnType
    missing: MissingRule = "error"
    fill: float | str | None = None         # the value for missing = "constant"
    indicator: bool = False                 # add a 0/1 "was missing" feature after the column's own
    scale: bool | None = None               # standardize with train mean/std (default: numeric yes, boolean no)
    encode: Encoding = "onehot"             # categorical only
    dim: int | None = None                  # categorical with encode = "embedding": features per category
    categories: tuple[str, ...] | None = None  # fixed in the spec, in this order
    max_categories: int | None = None       # learned from the train split: at most this many
    unknown: UnknownRule = "error"          # categorical: a category the train split (or the list) lacks

    def __post_init__(self) -> None:
        # Resolve the scaling default once, so a column read back from JSON equals the declared one.
        if self.scale is None:
            object.__setattr__(self, "scale", self.type == "numeric")

    def scaled(self) -> bool:
        """Whether the column's value is standardized (numeric by default, boolean on request, never a category)."""
        if self.type == "categorical":
            return False
        return self.type == "numeric" if self.scale is None else self.scale

    def slots(self) -> int:
        """Categories a categorical column can hold: the listed ones, or max_categories (0 for other types)."""
        if self.type != "categorical":
            return 0
        return len(self.categories) if self.categories is not None else int(self.max_categories or 0)

    def embeds(self) -> bool:
        """A categorical column encoded as an index into an embedding table (the model's front node looks it up)."""
        return self.type == "categorical" and self.encode == "embedding"

    def width(self) -> int:
        """Features the column gives the model's layers (after the embedding front, if any)."""
        if self.type != "categorical":
            own = 1
        elif self.embeds():
            own = int(self.dim or 0)
        else:
            own = self.slots()
        return own + int(self.indicator)

    def encoded_width(self) -> int:
        """Values the column takes in the encoded row (an embedding column's index is one value)."""
        own = self.slots() if self.type == "categorical" and self.encode == "onehot" else 1
        return own + int(self.indicator)

    def problems(self) -> list[str]:
        """What is inconsistent in the declaration (validate reports each, located at the column)."""
        out: list[str] = []
        cat = self.type == "categorical"
        if cat and self.categories is None and self.max_categories is None:
            out.append("expected `categories = [...]` (fixed in the spec) or `max_categories = N` (learned from the "
                       "training split, at most N) for a categorical column, received neither")
        if cat and self.categories is not None and len(set(self.categories)) != len(self.categories):
            dup = next(c for c, n in Counter(self.categories).items() if n > 1)
            out.append(f"categories: expected distinct names, received {dup!r} twice")
        if cat and self.categories is not None and any(is_missing(c) for c in self.categories):
            bad = next(c for c in self.categories if is_missing(c))
            out.append(f"categories: expected names, received {bad!r}, which reads as a missing cell")
        if cat and self.slots() < 1:
            out.append("expected at least one category, received none")
        if not cat:
            for key, value in (("categories", self.categories), ("max_categories", self.max_categories),
                               ("dim", self.dim)):
                if value is not None:
                    out.append(f"{key}: only for categorical columns, received it on a {self.type} column")
            if self.encode != "onehot" or self.unknown != "error":
                key = "encode" if self.encode != "onehot" else "unknown"
                out.append(f"{key}: only for categorical columns, received it on a {self.type} column")
        if cat and self.encode == "embedding" and not self.dim:
            out.append("expected `dim = N` (features per category) with encode = \"embedding\", received none")
        if cat and self.encode == "onehot" and self.dim is not None:
            out.append("dim: only with encode = \"embedding\", received it with one-hot encoding")
        if cat and self.missing in STATS_MISSING:
            out.append(f"missing: expected 'error', 'most_frequent' or 'constant' for a categorical column, "
                       f"received {self.missing!r}")
        if self.missing == "constant" and self.fill is None:
            out.append("expected `fill = VALUE` with missing = \"constant\", received none")
        if self.missing != "constant" and self.fill is not None:
            out.append(f"fill: only with missing = \"constant\", received missing = {self.missing!r}")
        if self.missing == "constant" and self.fill is not None:
            if self.type == "numeric" and not isinstance(self.fill, (int, float)):
                out.append(f"fill: expected a number for a numeric column, received {describe(self.fill)}")
            if self.type == "boolean" and _bool_value(self.fill) is None:
                out.append(f"fill: expected true or false for a boolean column, received {describe(self.fill)}")
            if cat and self.categories is not None and str(self.fill) not in self.categories:
                out.append(f"fill: expected one of the listed categories, received {self.fill!r}")
        return out


@dataclass(frozen=True)
class Fitted:
    """A column with what the training split fixed: its categories, its fill value and its scaling."""

    column: Column
    categories: tuple[str, ...] = ()   # categorical: the encoded order (listed, or learned)
    fill: float | str | None = None    # what a missing cell becomes (None: missing = "error")
    mean: float = 0.0                  # numeric/boolean scaling (identity when not scaled)
    std: float = 1.0
    most_frequent: str | None = None   # categorical: for unknown = "most_frequent"

    @property
    def name(self) -> str:
        return self.column.name


@dataclass(frozen=True)
class Table:
    """The fitted preprocessing of one tabular input: its columns in encoded order."""

    input: str
    columns: tuple[Fitted, ...]
    target: str | None = None          # the data's target column (not a feature), for infer's scoring
    version: int = 1

    def width(self) -> int:
        return sum(f.column.encoded_width() for f in self.columns)

    def layout(self) -> list[tuple[str, int, int]]:
        """(column name, start, stop) of each column's slice of the encoded row."""
        out, at = [], 0
        for f in self.columns:
            w = f.column.encoded_width()
            out.append((f.name, at, at + w))
            at += w
        return out

    def names(self) -> list[str]:
        return [f.name for f in self.columns]

    # ---- encoding ------------------------------------------------------------------------------------------------
    def encode(self, cells: dict[str, Sequence[Any]], where: str = "data",
               lines: Sequence[int] | None = None) -> np.ndarray:
        """The encoded rows, float32 [N, width()], of raw cells by column name (extra columns are ignored; a missing
        column, a missing cell under missing = "error", a non-number in a numeric column or an unknown category
        under unknown = "error" is a DataError naming the column and the row: `lines[i]` when given, else i + 1)."""
        absent = [n for n in self.names() if n not in cells]
        if absent:
            raise DataError(f"expected columns {describe(absent)} (the model's {self.input!r} input), received "
                            f"columns {describe(list(cells))}", where=where)
        sizes = {len(cells[n]) for n in self.names()}
        if len(sizes) > 1:
            raise DataError(f"expected columns of one length, received lengths {sorted(sizes)}", where=where)
        n = sizes.pop() if sizes else 0
        out = np.zeros((n, self.width()), dtype=np.float32)
        for f, (_, start, _) in zip(self.columns, self.layout()):
            _encode_column(f, list(cells[f.name]), out, start, where, lines)
        return out

    # ---- JSON ----------------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        cols = []
        for f in self.columns:
            c = f.column
            cols.append({"name": c.name, "type": c.type, "missing": c.missing, "fill": f.fill,
                         "indicator": c.indicator, "scale": c.scaled(), "mean": f.mean, "std": f.std,
                         "encode": c.encode, "dim": c.dim, "categories": list(f.categories),
                         "slots": c.slots(), "unknown": c.unknown, "most_frequent": f.most_frequent,
                         "listed": c.categories is not None, "declared_fill": c.fill})
        return {"version": self.version, "input": self.input, "target": self.target, "columns": cols,
                "width": self.width()}

    @classmethod
    def from_json(cls, data: dict) -> "Table":
        """Inverse of to_json (a ValueError/KeyError/TypeError on malformed data: callers say where it came from)."""
        fitted = []
        for c in data["columns"]:
            cats = tuple(str(v) for v in c["categories"])
            col = Column(name=str(c["name"]), type=c["type"], missing=c["missing"],
                         fill=c.get("declared_fill"), indicator=bool(c["indicator"]),
                         scale=bool(c["scale"]), encode=c["encode"], dim=c["dim"],
                         categories=cats if c.get("listed") else None,
                         max_categories=int(c["slots"]) if c["type"] == "categorical" and not c.get("listed")
                         else None, unknown=c["unknown"])
            fitted.append(Fitted(col, cats, c["fill"], float(c["mean"]), float(c["std"]), c["most_frequent"]))
        return cls(str(data["input"]), tuple(fitted), data.get("target"), int(data.get("version", 1)))


@dataclass(frozen=True)
class Request:
    """What training (and scoring) ask a tabular source for: the spec's input and its declared columns; `fitted`
    None means fit them on the training split, else encode every split with the given fitted table."""

    input: str
    columns: tuple[Column, ...]
    fitted: Table | None = None


# ---- fitting (the training split) -----------------------------------------------------------------------------------
def fit(input_name: str, columns: Sequence[Column], cells: dict[str, Sequence[Any]], where: str = "data",
        lines: Sequence[int] | None = None, target: str | None = None) -> Table:
    """Fix categories, fill values and scaling from the training split's raw cells (by column name)."""
    probe = Table(input_name, tuple(Fitted(c) for c in columns), target)
    absent = [n for n in probe.names() if n not in cells]
    if absent:
        raise DataError(f"expected columns {describe(absent)} (declared in the spec's input {input_name!r}), "
                        f"received columns {describe(list(cells))}", where=where)
    return replace(probe, columns=tuple(_fit_column(c, list(cells[c.name]), where, lines) for c in columns))


def _row(i: int, lines: Sequence[int] | None) -> int:
    return int(lines[i]) if lines is not None else i + 1


def _bool_value(cell: Any) -> float | None:
    if isinstance(cell, bool):
        return float(cell)
    text = str(cell).strip().lower()
    return 1.0 if text in TRUE_TOKENS else 0.0 if text in FALSE_TOKENS else None


def _number(cell: Any, f: Column, i: int, where: str, lines: Sequence[int] | None) -> float:
    """A numeric or boolean cell's value (not missing), or a located DataError."""
    if f.type == "boolean":
        v = _bool_value(cell)
        if v is None:
            raise DataError(f"row {_row(i, lines)}, column {f.name!r}: expected true/false (or yes/no, 1/0) for a "
                            f"boolean column, received {describe(cell)}", where=where)
        return v
    v = number(cell)
    if v is None:
        raise DataError(f"row {_row(i, lines)}, column {f.name!r}: expected a number (the column is declared "
                        f"numeric), received {describe(cell)}", where=where,
                        hint=DECIMAL_HINT if decimal_comma(cell) else "declare it categorical if its values are names")
    problem = number_problem(v)
    if problem:
        raise DataError(f"row {_row(i, lines)}, column {f.name!r}: expected {problem}, received {describe(cell)}",
                        where=where)
    return v


def _no_missing(f: Column, i: int, where: str, lines: Sequence[int] | None) -> DataError:
    return DataError(f"row {_row(i, lines)}, column {f.name!r}: expected a value, received a missing cell "
                     f"(the column's missing = \"error\")", where=where,
                     hint="declare a missing-value rule: missing = \"mean\", \"median\", \"most_frequent\" or "
                          "\"constant\" (with fill), optionally indicator = true")


def _fit_column(c: Column, cells: list[Any], where: str, lines: Sequence[int] | None) -> Fitted:
    present = [(i, v) for i, v in enumerate(cells) if not is_missing(v)]
    if c.missing == "error" and len(present) < len(cells):
        raise _no_missing(c, next(i for i, v in enumerate(cells) if is_missing(v)), where, lines)
    if not present and c.missing != "constant":
        raise DataError(f"column {c.name!r}: expected at least one value in the training split, received only "
                        f"missing cells", where=where)
    if c.type == "categorical":
        return _fit_categorical(c, [str(v).strip() for _, v in present], where)
    values = np.array([_number(v, c, i, where, lines) for i, v in present], dtype=np.float64)
    fill: float | None
    if c.missing == "mean":
        fill = float(values.mean())
    elif c.missing == "median":
        fill = float(np.median(values))
    elif c.missing == "most_frequent":
        uniq, counts = np.unique(values, return_counts=True)
        fill = float(uniq[int(np.argmax(counts))])  # ties: the smallest value
    elif c.missing == "constant":
        fill = float(_bool_value(c.fill)) if c.type == "boolean" else float(c.fill)  # type: ignore[arg-type]
    else:
        fill = None
    mean, std = 0.0, 1.0
    if c.scaled():
        filled = values if fill is None else np.concatenate([values, np.full(len(cells) - len(values), fill)])
        mean = float(filled.mean()) if len(filled) else 0.0
        std = float(filled.std()) if len(filled) else 1.0
        std = std if std > 1e-12 else 1.0  # a constant column: centred, not divided by zero
    return Fitted(c, (), fill, mean, std)


def _fit_categorical(c: Column, present: list[str], where: str) -> Fitted:
    counts = Counter(present)
    by_freq = sorted(counts, key=lambda v: (-counts[v], v))
    fill: str | None = None
    if c.missing == "constant":
        fill = str(c.fill)
    elif c.missing == "most_frequent":
        fill = by_freq[0]
    if c.categories is not None:
        cats = c.categories
    else:
        learned = list(by_freq)
        if fill is not None and fill not in counts:
            learned.append(fill)  # a constant fill is a category of its own
        if len(learned) > int(c.max_categories or 0):
            raise DataError(f"column {c.name!r}: expected at most {c.max_categories} categories (its "
                            f"max_categories), received {len(learned)} in the training split "
                            f"({describe(learned[:8])}{', ...' if len(learned) > 8 else ''})", where=where,
                            hint="raise max_categories, or list the categories in the spec")
        cats = tuple(learned)
    listed = set(cats)  # a set: fitting 100,000 categories stays linear
    known = [v for v in by_freq if v in listed]
    most = known[0] if known else cats[0]
    return Fitted(c, tuple(cats), fill, 0.0, 1.0, most)


def _encode_column(f: Fitted, cells: list[Any], out: np.ndarray, start: int, where: str,
                   lines: Sequence[int] | None) -> None:
    c = f.column
    missing = np.array([is_missing(v) for v in cells], dtype=bool)
    if missing.any() and f.fill is None:
        raise _no_missing(c, int(np.argmax(missing)), where, lines)
    own = c.encoded_width() - int(c.indicator)
    if c.indicator:
        out[:, start + own] = missing
    if c.type != "categorical":
        values = np.array([f.fill if m else _number(v, c, i, where, lines)
                           for i, (v, m) in enumerate(zip(cells, missing))], dtype=np.float64)
        scaled = (values - f.mean) / f.std if c.scaled() else values
        big = np.abs(scaled) > FLOAT32_MAX  # each value is in range; standardized, it may not be
        if big.any():
            i = int(np.argmax(big))
            raise DataError(f"row {_row(i, lines)}, column {c.name!r}: expected a value within float32's range once "
                            f"standardized ((v - {f.mean:.6g}) / {f.std:.6g}, the training split's mean and std), "
                            f"received {describe(cells[i])}", where=where)
        out[:, start] = scaled
        return
    index = {v: k for k, v in enumerate(f.categories)}
    for i, (v, m) in enumerate(zip(cells, missing)):
        text = str(f.fill) if m else str(v).strip()
        k = index.get(text)
        if k is None:
            if c.unknown == "error":
                raise DataError(f"row {_row(i, lines)}, column {c.name!r}: expected one of the categories "
                                f"{describe(list(f.categories))}, received {text!r}", where=where,
                                hint="declare unknown = \"ignore\" or \"most_frequent\" to accept unseen categories")
            k = index[f.most_frequent] if c.unknown == "most_frequent" and f.most_frequent is not None else -1
        if c.encode == "embedding":
            out[i, start] = k if k >= 0 else c.slots()
        elif k >= 0:
            out[i, start + k] = 1.0
