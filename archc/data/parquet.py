"""`parquet:FILE|DIR[?target=COLUMN]`: a Parquet file, or a folder of .parquet files (sorted by name, one schema),
read by column name as csv: reads a CSV (archc/data/tabular.py: the same target, task, split and
`[inputs.NAME.columns]` code).

Read with pyarrow (imported only inside `load`), row group by row group and only the columns needed: the target
column first (its values decide the task and the split), then the training split's declared cells for the fit,
then each row group encoded into the preallocated float rows. Values map as a CSV's text would: numbers stay
numbers, strings are text, booleans read as the text 'True'/'False' (as pandas writes them to a CSV), nulls are
missing cells; dates, times, binary and nested columns are refused (a DataError naming the column).
Row numbers in messages count data rows from 1 across the files.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from archc.data.arrays import from_arrays
from archc.data.base import Example, Source, Splits, register
from archc.data.options import SourceOptions, option
from archc.data.columns import Request, Table
from archc.data.dataset import Dataset
from archc.data.tabular import (RawTable, _check_features, _column_floats, check_declared, fit_and_encode,
                                target_column, target_values)
from archc.errors import DataError
from archc.labels import CLASSES, TARGETS
from archc.util import why_not_a_file


@dataclass(frozen=True)
class _Group:
    """One row group: its file, its index in that file, and its first row's number (from 0, across the files)."""

    path: Path
    index: int
    start: int
    rows: int


def _files(arg: Path, name: str) -> list[Path]:
    if arg.is_dir():
        files = sorted(p for p in arg.iterdir() if p.suffix.lower() == ".parquet" and p.is_file())
        if not files:
            raise DataError(f"expected .parquet files in the folder, received none in {str(arg)!r}", where=name)
        return files
    if not arg.is_file():
        raise DataError(f"expected a Parquet file or a folder of them, received {str(arg)!r}{why_not_a_file(arg)}",
                        where=name)
    return [arg]


def _kind(field: Any) -> str | None:
    """What a column's Arrow type reads as: 'number', 'text', 'bool', or None (refused)."""
    import pyarrow as pa
    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_null(t):
        return "text"
    return None


class _Parquet:
    """The opened files: their row groups, in order, and the shared schema (checked file by file)."""

    def __init__(self, files: list[Path], name: str) -> None:
        import pyarrow.parquet as pq
        self.name = name
        self.files: dict[Path, Any] = {}
        self.groups: list[_Group] = []
        schema = None
        start = 0
        for path in files:
            try:
                f = pq.ParquetFile(path)
            except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a file that is not Parquet
                raise DataError(f"expected a Parquet file, received one that fails to read ({e})",
                                where=f"{name} ({path.name})") from None
            s = f.schema_arrow
            if schema is None:
                schema, first = s, path
            elif not s.equals(schema):
                raise DataError(f"expected the schema of {first.name} ({_fields(schema)}), received {_fields(s)}",
                                where=f"{name} ({path.name})",
                                hint="every file of a parquet: folder has the same columns and types")
            self.files[path] = f
            for i in range(f.num_row_groups):
                rows = f.metadata.row_group(i).num_rows
                self.groups.append(_Group(path, i, start, rows))
                start += rows
        self.schema = schema
        self.rows = start
        self.columns: list[str] = list(schema.names)
        if len(set(self.columns)) != len(self.columns):
            dup = next(c for c in self.columns if self.columns.count(c) > 1)
            raise DataError(f"expected distinct column names, received {dup!r} twice", where=name)

    def check(self, column: str) -> None:
        field = self.schema.field(column)
        if _kind(field) is None:
            raise DataError(f"column {column!r}: expected numbers, strings or booleans, received Arrow type "
                            f"{field.type}", where=self.name,
                            hint="cast it (a date to a number or a string) before writing the file")

    def read(self, columns: list[str]) -> Iterator[tuple[_Group, dict[str, list]]]:
        """Each row group's cells of `columns`, as csv: would read them (see the module docstring)."""
        for c in columns:
            self.check(c)
        for g in self.groups:
            try:
                t = self.files[g.path].read_row_group(g.index, columns=columns)
            except Exception as e:
                raise DataError(f"row group {g.index}: expected readable Parquet data, received data that fails to "
                                f"read ({e})", where=f"{self.name} ({g.path.name})") from None
            yield g, {c: _cells(t.column(c), _kind(self.schema.field(c))) for c in columns}


def _cells(array: Any, kind: str | None) -> list:
    """A column's values as csv: cells: booleans as the text 'True'/'False', decimals as floats, nulls None."""
    import pyarrow as pa
    values = array.to_pylist()
    if kind == "bool":
        return [None if v is None else ("True" if v else "False") for v in values]
    if pa.types.is_decimal(array.type):
        return [None if v is None else float(v) for v in values]
    return values


def _fields(schema: Any) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def _lines(idx: np.ndarray) -> list[int]:
    return [int(i) + 1 for i in idx]


@dataclass(frozen=True)
class ParquetOptions(SourceOptions):
    target: str | None = option(None, title="COLUMN", description="the target column's name (default: the last column)")


@register
class ParquetTable(Source):
    """A Parquet file or a folder of them, read by column name as csv: reads a CSV, row group by row group: the
    target column (default: the last) and numeric feature columns, or the columns a spec's tabular input declares."""

    scheme = "parquet"
    argument = "FILE|DIR"
    takes_path = True
    tasks = (CLASSES, TARGETS)
    Options = ParquetOptions

    def load(self, arg: Path, splits: Splits, task: str | None, options: ParquetOptions,
             columns: Request | None = None) -> Dataset:
        name = self.name
        pf = _Parquet(_files(arg, name), name)
        if len(pf.columns) < 2:
            raise DataError(f"expected at least one feature column and a target column, received {pf.columns}",
                            where=name)
        target = target_column(pf.columns, options.target, name)
        if columns is not None:
            _check_features(name, target, columns)
        if not pf.rows:
            raise DataError("expected at least one data row, received none", where=name)
        cells: list = []
        for _, part in pf.read([target]):
            cells.extend(part[target])
        y, classes, task = target_values(cells, target, list(range(1, pf.rows + 1)), task, name)
        del cells
        if columns is not None:
            declared = check_declared(name, pf.columns, columns)
            return fit_and_encode(name, target, y, classes, task, splits, columns,
                                  lambda idx: _gather(pf, declared, idx), lambda t, idx: _encode(pf, declared, t, idx))
        feats = [c for c in pf.columns if c != target]
        x = np.empty((pf.rows, len(feats)), dtype=np.float32)
        for g, part in pf.read(feats):
            lines = list(range(g.start + 1, g.start + g.rows + 1))
            for j, c in enumerate(feats):
                x[g.start:g.start + g.rows, j] = _column_floats(part[c], c, lines, name, _declare_hint)
        ds = from_arrays(name, x, y, classes=classes, task=task, splits=splits)
        return dataclasses.replace(ds, features=feats)

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix.lower() == ".parquet"

    @classmethod
    def example(cls, folder: Path) -> Example:
        import pyarrow as pa
        import pyarrow.parquet as pq
        n = 24
        t = pa.table({"a": list(range(n)), "b": [i % 5 / 2 for i in range(n)],
                      "label": ["yes" if i % 2 else "no" for i in range(n)], "score": [i * 0.5 for i in range(n)]})
        pq.write_table(t, folder / "table.parquet", row_group_size=10)
        return Example(f"parquet:{folder / 'table.parquet'}", CLASSES, (3,), n, {"target": "label"})


def _declare_hint(column: str) -> str:
    return (f"declare the columns by name in the spec's [inputs.NAME.columns] (text becomes a categorical column, "
            f"a missing cell takes a missing rule), or name {column!r} as the target")


def _in_group(g: Any, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in idx (sorted) of the rows in group g, and those rows' offsets within it."""
    lo, hi = np.searchsorted(idx, [g.start, g.start + g.rows])
    return np.arange(lo, hi), idx[lo:hi] - g.start


def _gather(pf: _Parquet, declared: list[str], idx: np.ndarray) -> tuple[dict[str, list], list[int]]:
    """The declared columns' cells of rows idx (sorted), read group by group (the fit's training cells)."""
    out: dict[str, list] = {c: [] for c in declared}
    for g, part in pf.read(declared):
        _, rows = _in_group(g, idx)
        for c in declared:
            col = part[c]
            out[c].extend(col[int(r)] for r in rows)
    return out, _lines(idx)


def _encode(pf: _Parquet, declared: list[str], table: Table, idx: np.ndarray) -> np.ndarray:
    """Rows idx (sorted) encoded group by group into one float32 array (the encoding is row by row)."""
    x = table.encode({c: [] for c in declared}, where=pf.name)  # [0, width]: the row's width
    x = np.zeros((len(idx), x.shape[1]), dtype=np.float32)
    for g, part in pf.read(declared):
        at, rows = _in_group(g, idx)
        if len(at):
            cells = {c: [part[c][int(r)] for r in rows] for c in declared}
            x[at] = table.encode(cells, where=pf.name, lines=_lines(idx[at]))
    return x


def read_rows(arg: Path, name: str) -> tuple[list[str], Callable[[list[str]], RawTable]]:
    """The file's (or folder's) column names, and a reader of some of them as a RawTable (rows numbered from 1):
    `archc infer --input parquet:FILE` reads the model's columns and the target this way, as csv: reads a CSV."""
    pf = _Parquet(_files(arg, name), name)

    def read(columns: list[str]) -> RawTable:
        cells: dict[str, list] = {c: [] for c in columns}
        for _, part in pf.read(columns):
            for c in columns:
                cells[c].extend(part[c])
        return RawTable(pf.columns, cells, list(range(1, pf.rows + 1)))

    return pf.columns, read


def text_table(arg: Path, name: str) -> tuple[RawTable, dict[str, str], list[str]]:
    """Every readable column's cells as a CSV's text (a missing cell: ''), for `archc init`'s survey, the columns
    no archc source reads ({name: Arrow type}: dates, lists, ...), and every column's name in file order."""
    pf = _Parquet(_files(arg, name), name)
    refused = {c: str(pf.schema.field(c).type) for c in pf.columns if _kind(pf.schema.field(c)) is None}
    columns = [c for c in pf.columns if c not in refused]
    cells: dict[str, list[str]] = {c: [] for c in columns}
    for _, part in pf.read(columns):
        for c in columns:
            cells[c].extend("" if v is None else v if isinstance(v, str) else repr(v) if isinstance(v, float)
                            else str(v) for v in part[c])
    return RawTable(columns, cells, list(range(1, pf.rows + 1))), refused, list(pf.columns)
