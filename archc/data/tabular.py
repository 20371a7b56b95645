"""`csv:FILE[?target=COLUMN]`: a header row, numeric feature columns and one target column."""
from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pydantic import Field

from archc.data.arrays import from_arrays
from archc.data.base import Example, Source, SourceOptions, Splits, register
from archc.data.dataset import Dataset
from archc.errors import DataError, describe
from archc.labels import CLASSES, TARGETS

MAX_CLASSES = 20  # an integer target with at most this many distinct values is taken as class labels


def _is_number(text: str) -> bool:
    """True when float() accepts the cell."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_rows(path: Path, name: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows (blank lines skipped) and each row's line number in the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows, lines, header = [], [], None
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if header is None:
                    header = [c.strip() for c in row]
                    continue
                rows.append([c.strip() for c in row])
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"expected a readable UTF-8 CSV file, received one that fails to read ({e})",
                        where=name) from None
    if header is None:
        raise DataError("expected a header row, received an empty file", where=name)
    if all(_is_number(c) for c in header):
        raise DataError(f"expected a header row of column names, received numbers {describe(header)}",
                        where=name, hint="add a first line naming the columns")
    return header, rows, lines


@dataclass(frozen=True)
class RawTable:
    """A CSV's cells by column name, as text (stripped), and each data row's line number in the file."""

    columns: list[str]
    cells: dict[str, list[str]]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.lines)


def read_table(path: Path, name: str) -> RawTable:
    """A CSV with a header row, read by column name (every row must have the header's cell count)."""
    if not path.is_file():
        raise DataError(f"expected a CSV file, received {str(path)!r}, which does not exist", where=name)
    header, rows, lines = _read_rows(path, name)
    for row, line in zip(rows, lines):
        if len(row) != len(header):
            raise DataError(f"row {line}: expected {len(header)} cells (as in the header), received {len(row)}",
                            where=name)
    dup = next((h for h in header if header.count(h) > 1), None)
    if dup is not None:
        raise DataError(f"expected distinct column names in the header, received {dup!r} twice", where=name)
    columns = list(zip(*rows)) if rows else [() for _ in header]
    return RawTable(header, {h: list(c) for h, c in zip(header, columns)}, lines)


def _column_floats(cells: list[str], column: str, lines: list[int], name: str) -> np.ndarray:
    """Parse one column as float32, naming the first bad cell."""
    try:
        return np.array(cells, dtype=np.float64).astype(np.float32)
    except ValueError:
        pass  # find the first offending cell for the message; the fast path covers good data
    for cell, line in zip(cells, lines):
        if not _is_number(cell):
            received = "an empty cell" if cell == "" else describe(cell)
            raise DataError(f"row {line}, column {column!r}: expected a number, received {received}", where=name)
    raise DataError(f"column {column!r}: expected numbers", where=name)  # unreachable in practice


class CsvOptions(SourceOptions):
    target: str | None = Field(None, title="COLUMN", description="the target column's name (default: the last column)")


@register
class CsvTable(Source):
    """A CSV file: a header row, numeric feature columns and one target column (default: the last); text or
    few integer targets make classification, other numbers regression."""

    scheme = "csv"
    argument = "FILE"
    takes_path = True
    tasks = (CLASSES, TARGETS)
    Options = CsvOptions

    def load(self, arg: Path, splits: Splits, task: str | None, options: CsvOptions) -> Dataset:
        """Numeric features plus a target column → classification or regression."""
        name = self.name
        if not arg.is_file():
            raise DataError(f"expected a CSV file, received {str(arg)!r}, which does not exist", where=name)
        header, rows, lines = _read_rows(arg, name)
        if len(header) < 2:
            raise DataError(f"expected at least one feature column and a target column, received {header}",
                            where=name)
        t = _target_column(header, options.target, name)
        if not rows:
            raise DataError("expected at least one data row after the header, received none", where=name)
        for row, line in zip(rows, lines):
            if len(row) != len(header):
                raise DataError(f"row {line}: expected {len(header)} cells (as in the header), received {len(row)}",
                                where=name)
        columns = list(zip(*rows))
        feats = [_column_floats(list(columns[j]), header[j], lines, name) for j in range(len(header)) if j != t]
        x = np.stack(feats, axis=1)
        bad = ~np.isfinite(x)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            col = [h for k, h in enumerate(header) if k != t][j]
            raise DataError(f"row {lines[i]}, column {col!r}: expected a finite number, received {x[i, j]}",
                            where=name)
        y, classes, task = _target(list(columns[t]), header[t], lines, task, name)
        return from_arrays(name, x, y, classes=classes, task=task, splits=splits)

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix.lower() == ".csv"

    @classmethod
    def example(cls, folder: Path) -> Example:
        rows = [f"{i},{i % 5 / 2},{'yes' if i % 2 else 'no'},{i * 0.5}" for i in range(24)]
        (folder / "table.csv").write_text("a,b,label,score\n" + "\n".join(rows) + "\n")
        return Example(f"csv:{folder / 'table.csv'}", CLASSES, (3,), 24, {"target": "label"})


def _target_column(header: list[str], target: str | None, name: str) -> int:
    """The target's column index: the named one, or the last."""
    if target is None:
        return len(header) - 1
    if target in header:
        return header.index(target)
    close = difflib.get_close_matches(target, header, n=1)
    raise DataError(f"expected target column {target!r}, received columns {header}", where=name,
                    hint=f"did you mean {close[0]!r}?" if close else "")


def _target(cells: list[str], column: str, lines: list[int], task: str | None,
            name: str) -> tuple[np.ndarray, list[str] | None, str]:
    """Decide the task and encode the target column."""
    for cell, line in zip(cells, lines):
        if cell == "":
            raise DataError(f"row {line}, column {column!r}: expected a target value, received an empty cell",
                            where=name)
    numeric = all(_is_number(c) for c in cells)
    values = np.array([float(c) for c in cells]) if numeric else None
    if values is not None and not np.isfinite(values).all():
        i = int(np.argmin(np.isfinite(values)))
        raise DataError(f"row {lines[i]}, column {column!r}: expected a finite target, received {cells[i]!r}",
                        where=name)
    if task is None:
        if not numeric:
            task = CLASSES
        else:
            integral = bool(np.all(values == np.round(values)))
            task = CLASSES if integral and len(np.unique(values)) <= MAX_CLASSES else TARGETS
    if task == TARGETS:
        if not numeric:
            bad = next((c, ln) for c, ln in zip(cells, lines) if not _is_number(c))
            raise DataError(f"row {bad[1]}, column {column!r}: expected a number for a regression target, "
                            f"received {describe(bad[0])}", where=name)
        return values.astype(np.float32), None, task
    if numeric:
        # Numeric classes sort by value ("2" before "10") and are named canonically ("1.0" → "1").
        distinct = np.unique(values)
        names = [str(int(v)) if v == int(v) else repr(float(v)) for v in distinct]
        return np.searchsorted(distinct, values).astype(np.int64), names, task
    names = sorted(set(cells))
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup[c] for c in cells], dtype=np.int64), names, task
