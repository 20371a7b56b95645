"""`csv:FILE[?target=COLUMN&delimiter=C&header=false&skip=N&decimal=,]`: a CSV read by column name.

Without declared columns every column but the target must be a number (the features, in file order); with a
`columns=Request` (a spec's tabular input, archc/data/columns.py) the declared columns are read by name, fitted on
the training split and encoded in every split, and the Dataset carries the fitted `Table`.

The training source streams (archc/data/csvfile.py): a first pass checks the layout and numbers the rows, then
passes read the target column, the training split's declared cells (the fit) and the rows to encode, so memory holds
the encoded float rows, the target and the row numbers, never every cell as text. `read_table` (a RawTable: every
cell as text) stays for `archc columns` and `archc infer --input csv:`.

scikit-learn's shipped CSV files (sklearn/datasets/data/iris.csv, ...) start with a metadata line, `N,F,name,...`
(rows, features, class names), instead of column names: they are recognised and read as features `column_1..F`
and a `target` column holding the class names.
"""
from __future__ import annotations

import array
import csv
import dataclasses
import difflib
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np

from pydantic import Field

from archc.data.arrays import from_arrays, split_rows
from archc.data.base import Example, Source, SourceOptions, Splits, register
from archc.data.columns import (DECIMAL_HINT, FLOAT32_MAX, Request, Table, decimal_comma, fit, is_missing, number,
                                number_problem)
from archc.data.csvfile import SAMPLE_LINES, CsvFile, Passes, Shape, point, recognise, share, utf8
from archc.data.dataset import Dataset, Split, finish
from archc.util import why_not_a_file
from archc.errors import DataError, describe
from archc.labels import CLASSES, TARGETS

MAX_CLASSES = 20  # an integer target with at most this many distinct values is taken as class labels


_COUNT = re.compile(r"[0-9]{1,18}")  # a count in scikit-learn's first line: ASCII digits ('²'.isdigit() is True)


def is_number(text: str) -> bool:
    """True when the cell is a number in the CSV grammar (archc.data.columns.number)."""
    return number(text) is not None


def _is_int(text: str) -> bool:
    return _COUNT.fullmatch(text) is not None


@dataclass(frozen=True)
class Dialect:
    """How a CSV is written: its delimiter (None: a comma, or recognised), whether its first line names the
    columns, how many leading lines to skip, and its decimal mark ('.', or ',': '3,45' reads as 3.45)."""

    delimiter: str | None = None
    header: bool = True
    skip: int = 0
    decimal: str = "."


@dataclass(frozen=True)
class RawTable:
    """A CSV's cells by column name, as text (stripped), and each data row's line number in the file."""

    columns: list[str]
    cells: dict[str, list[str]]
    lines: list[int]
    layout: str = "header"  # "header", "no header" (column_1..) or "sklearn" (the metadata first line)

    def __len__(self) -> int:
        return len(self.lines)


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")  # a line and its ending, as StringIO(newline="") reads it


def text_lines(text: str) -> Iterator[str]:
    """The text's lines with their endings (\\n, \\r or \\r\\n), one at a time: no copy of the whole text (an
    io.StringIO holds one, up to four bytes a character: a 1 GB file's worth)."""
    return (m.group() for m in _LINE.finditer(text))


def recognise_delimiter(text: str) -> str:
    """A comma, unless the first line has none and a tab, ';' or '|' splits every sampled line alike."""
    return recognise(itertools.islice(text_lines(text), SAMPLE_LINES))


def _records(path: Path, name: str, dialect: Dialect) -> tuple[list[list[str]], list[int]]:
    """Non-blank records (cells stripped) after the skipped lines, and each one's line number in the file."""
    try:
        text = utf8(path.read_bytes(), name)
        lines_in = text_lines(text)
        skipped = 0
        while skipped < dialect.skip and next(lines_in, None) is not None:  # stops at the end, whatever the count
            skipped += 1
        if skipped < dialect.skip:
            raise DataError(f"skip: expected at most the file's {skipped} lines, received ?skip={dialect.skip}",
                            where=name)
        # With decimal=',' and a comma delimiter, only quoted cells ("3,45") can hold a decimal comma.
        delimiter = dialect.delimiter or recognise_delimiter(text[_offset(text, skipped):])
        reader = csv.reader(lines_in, delimiter=delimiter)
        records, lines = [], []
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            cells = [c.strip() for c in row]
            records.append([point(c) for c in cells] if dialect.decimal == "," else cells)
            lines.append(reader.line_num + skipped)
    except csv.Error as e:  # only the reader raises it: its line is where
        raise DataError(f"line {reader.line_num + skipped}: expected a CSV record, received one that fails to read "
                        f"({e})", where=name) from None
    except OSError as e:
        raise DataError(f"expected a readable CSV file, received one that fails to read ({e})", where=name) from None
    return records, lines


def _offset(text: str, lines: int) -> int:
    """Where the text after its first `lines` lines starts."""
    end = 0
    for line in itertools.islice(text_lines(text), lines):
        end += len(line)
    return end


def _sklearn_layout(first: list[str], rows: list[list[str]]) -> list[str] | None:
    """The class names of scikit-learn's metadata first line `N,F,name,...` (N rows of F features and a class
    index), or None when the first line is not one."""
    names = _sklearn_names(first)
    if names is None or int(first[0]) != len(rows) or not all(_sklearn_row(r, first, names) for r in rows):
        return None
    return names


def _sklearn_names(first: list[str]) -> list[str] | None:
    """The class names when the first line may be scikit-learn's metadata line (its rows not yet checked)."""
    if len(first) < 3 or not (_is_int(first[0]) and _is_int(first[1])):
        return None
    return first[2:]


def _sklearn_row(row: list[str], first: list[str], names: list[str]) -> bool:
    """Whether a row fits the metadata line: F features and a class index."""
    return len(row) == int(first[1]) + 1 and _is_int(row[-1]) and int(row[-1]) < len(names)


def _check_header(header: list[str], counts: set[int], second: list[str], line: int, path: Path,
                  name: str) -> None:
    """Refuse a first line that is not column names: all numbers, or a cell count no row shares (`counts`: the
    rows' cell counts; `second`: the first row after it)."""
    if all(is_number(c) for c in header):
        raise DataError(f"expected a header row of column names, received numbers {describe(header)}",
                        where=name, hint=f"add a first line naming the columns, or read the file as it is with "
                                         f"'csv:{path}?header=false' (columns named column_1, column_2, ...)")
    if len(counts) == 1 and len(header) not in counts:
        (count,) = counts
        skip = "?skip=1&header=false" if all(is_number(c) for c in second) else "?skip=1"
        raise DataError(f"line {line}: expected the column names, received {len(header)} cells while every "
                        f"row after it has {count}: the first line is not a header", where=name,
                        hint=f"skip it: 'csv:{path}{skip}'" + (" (columns named column_1, column_2, ...)"
                                                                 if "header" in skip else ""))


def read_table(path: Path, name: str, dialect: Dialect | None = None) -> RawTable:
    """A CSV read by column name (every row must have the header's cell count); see Dialect for the options."""
    dialect = dialect or Dialect()
    if not path.is_file():
        raise DataError(f"expected a CSV file, received {str(path)!r}{why_not_a_file(path)}", where=name)
    records, lines = _records(path, name, dialect)
    if not records:
        raise DataError("expected a header row, received an empty file" if dialect.header else
                        "expected rows, received an empty file", where=name)
    if dialect.header:
        header_line = lines[0]
        header, rows, lines = records[0], records[1:], lines[1:]
        classes = _sklearn_layout(header, rows)
        if classes is not None:
            cols = [f"column_{i + 1}" for i in range(int(header[1]))] + ["target"]
            rows = [r[:-1] + [classes[int(r[-1])]] for r in rows]
            return _table(cols, rows, lines, name, "sklearn")
        if rows:
            _check_header(header, {len(r) for r in rows}, rows[0], header_line, path, name)
        # A blank header cell (a pandas index column) still needs a name to be read by.
        blank = {i for i, h in enumerate(header) if not h}
        header = [h or f"column_{i + 1}" for i, h in enumerate(header)]
        return _table(header, rows, lines, name, "header", blank, header_line)
    header, rows = [f"column_{i + 1}" for i in range(len(records[0]))], records
    return _table(header, rows, lines, name, "no header")


def scan(path: Path, name: str, dialect: Dialect) -> Passes:
    """The first pass over a CSV: its column names and each data row's line number, with read_table's checks and
    messages, holding no cells; the returned Passes read the rows again."""
    if not path.is_file():
        raise DataError(f"expected a CSV file, received {str(path)!r}{why_not_a_file(path)}", where=name)
    file = CsvFile(path, name, dialect)
    records = file.records()
    first = next(records, None)
    if first is None:
        raise DataError("expected a header row, received an empty file" if dialect.header else
                        "expected rows, received an empty file", where=name)
    head, head_line = first
    lines = array.array("q", [] if dialect.header else [head_line])
    counts: set[int] = set()
    second, mismatch = None, None
    classes = _sklearn_names(head) if dialect.header else None
    sklearn = classes is not None
    for cells, line in records:
        lines.append(line)
        counts.add(len(cells))
        second = cells if second is None else second
        if mismatch is None and len(cells) != len(head):
            mismatch = (line, len(cells))
        sklearn = sklearn and _sklearn_row(cells, head, classes)
    rows = np.array(lines, dtype=np.int64)
    if not dialect.header:
        if mismatch is not None:
            _wrong_count(mismatch[0], len(head), mismatch[1], name)
        return Passes(file, Shape([f"column_{i + 1}" for i in range(len(head))], rows, "no header"))
    if sklearn and int(head[0]) == len(rows):
        return Passes(file, Shape([f"column_{i + 1}" for i in range(int(head[1]))] + ["target"], rows, "sklearn",
                                  classes))
    if len(rows):
        _check_header(head, counts, second, head_line, path, name)
    blank = {i for i, h in enumerate(head) if not h}
    header = [h or f"column_{i + 1}" for i, h in enumerate(head)]
    if mismatch is not None:
        _wrong_count(mismatch[0], len(header), mismatch[1], name)
    _check_distinct(header, blank, head_line, name)
    return Passes(file, Shape(header, rows, "header"))


def _table(header: list[str], rows: list[list[str]], lines: list[int], name: str, layout: str,
           blank: set[int] | None = None, header_line: int = 1) -> RawTable:
    """The cells by column name; `blank`: positions (from 0) of blank header cells, named column_N."""
    for row, line in zip(rows, lines):
        if len(row) != len(header):
            _wrong_count(line, len(header), len(row), name)
    _check_distinct(header, blank or set(), header_line, name)
    columns = list(zip(*rows)) if rows else [() for _ in header]
    return RawTable(header, {h: list(c) for h, c in zip(header, columns)}, lines, layout)


def _wrong_count(line: int, expected: int, received: int, name: str) -> None:
    raise DataError(f"row {line}: expected {expected} cells (as in the header), received {received}", where=name)


def _check_distinct(header: list[str], blank: set[int], line: int, name: str) -> None:
    """Every column name once (a Counter: linear in the header's width); a blank cell is named as blank."""
    counts = Counter(header)
    dup = next((h for h in header if counts[h] > 1), None)
    if dup is None:
        return
    at = [i for i, h in enumerate(header) if h == dup]
    empty = next((i for i in at if i in blank), None)
    if empty is not None:
        other = next(i for i in at if i != empty)
        raise DataError(f"line {line}, column {empty + 1}: expected a column name, received a blank header cell "
                        f"(read as {dup!r}, which column {other + 1} is named)", where=name,
                        hint=f"name column {empty + 1} in the header")
    raise DataError(f"expected distinct column names in the header, received {dup!r} twice (columns "
                    f"{at[0] + 1} and {at[1] + 1} of line {line})", where=name)


def _column_floats(cells: list[str], column: str, lines: list[int], name: str,
                   hint: Callable[[str], str]) -> np.ndarray:
    """Parse one column as float32, naming the first bad cell (with `hint(column)`: how to read it instead)."""
    values = [number(c) for c in cells]
    for cell, value, line in zip(cells, values, lines):  # the first offending cell, for the message
        if value is None:
            received = "an empty cell" if cell == "" else describe(cell)
            raise DataError(f"row {line}, column {column!r}: expected a number, received {received}",
                            where=name, hint=DECIMAL_HINT if decimal_comma(cell) else hint(column))
        problem = number_problem(value)  # 'nan', 'inf', '1e39': numbers to float(), not float32 features
        if problem:
            raise DataError(f"row {line}, column {column!r}: expected {problem}, received {describe(cell)}",
                            where=name, hint=hint(column) if "finite" in problem else "")
    return np.array(values, dtype=np.float32)


def _delimiter(text: str | None) -> str | None:
    """`?delimiter=`'s value: one character, or `tab` / `\\t`."""
    if text is None:
        return None
    if text in ("tab", "\\t"):
        return "\t"
    if len(text) != 1:
        raise ValueError(f"expected one character (or tab), received {text!r}")
    return text


class CsvOptions(SourceOptions):
    target: str | None = Field(None, title="COLUMN", description="the target column's name (default: the last column)")
    delimiter: str | None = Field(None, title="C", description="the cell separator, one character or 'tab' "
                                  "(default: a comma, or a tab, ';' or '|' when the first line has no comma)")
    header: bool = Field(True, title="true|false", description="whether the first line names the columns "
                         "(false: columns named column_1, column_2, ...)")
    skip: int = Field(0, ge=0, description="leading lines to skip before the header (or the first row)")
    decimal: Literal[".", ","] = Field(".", title=".|,", description="the decimal mark of numbers: '.' or ',' "
                                       "('3,45' reads as 3.45)")

    def dialect(self, where: str) -> Dialect:
        try:
            return Dialect(_delimiter(self.delimiter), self.header, self.skip, self.decimal)
        except ValueError as e:
            raise DataError(f"delimiter: {e}", where=where) from None


@register
class CsvTable(Source):
    """A CSV file read by column name: the target column (default: the last) and numeric feature columns, or the
    columns a spec's tabular input declares; text or few integer targets make classification, other numbers
    regression."""

    scheme = "csv"
    argument = "FILE"
    takes_path = True
    tasks = (CLASSES, TARGETS)
    Options = CsvOptions

    def load(self, arg: Path, splits: Splits, task: str | None, options: CsvOptions,
             columns: Request | None = None) -> Dataset:
        """Features (numeric columns, or the declared columns encoded) plus a target → classification or
        regression."""
        name = self.name
        passes = scan(arg, name, options.dialect(name))
        shape = passes.shape
        if len(shape.columns) < 2:
            raise DataError(f"expected at least one feature column and a target column, received {shape.columns}",
                            where=name, hint="a file of another delimiter? write ?delimiter=C")
        target = target_column(shape.columns, options.target, name)
        if columns is not None:
            _check_features(name, target, columns)
        if not len(shape.lines):
            raise DataError("expected at least one data row after the header, received none", where=name)
        if columns is not None:
            cells = passes.cells([target])[target]
            y, classes, task = target_values(cells, target, shape.lines, task, name)
            del cells
            return _by_columns(name, passes, target, y, classes, task, splits, columns)
        feats = [c for c in shape.columns if c != target]
        cells, x, bad = _numbers(passes, target, feats)
        y, classes, task = target_values(cells, target, shape.lines, task, name)
        del cells
        if bad is not None:  # an extra pass, only on the error: the column's cells name its first bad one
            column = passes.cells([bad])[bad]
            _column_floats(column, bad, shape.lines, name,
                           lambda c: _declare_hint(arg, column, target, options.target is None, c))
        ds = from_arrays(name, x, y, classes=classes, task=task, splits=splits)
        return dataclasses.replace(ds, features=feats)

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix.lower() in (".csv", ".tsv")

    @classmethod
    def example(cls, folder: Path) -> Example:
        rows = [f"{i},{i % 5 / 2},{'yes' if i % 2 else 'no'},{i * 0.5}" for i in range(24)]
        (folder / "table.csv").write_text("a,b,label,score\n" + "\n".join(rows) + "\n")
        return Example(f"csv:{folder / 'table.csv'}", CLASSES, (3,), 24, {"target": "label"})


def _declare_hint(path: Path, cells: list[str], target: str, defaulted: bool, column: str) -> str:
    """How to read a file whose feature `column` is not all numbers: name it as the target when it looks like one
    (text of a few values while the target was taken as the last column), else declare the columns."""
    declare = (f"declare the columns by name: run `archc columns {path}` and paste its [inputs.NAME.columns] "
               f"table into the spec (text becomes a categorical column, a missing cell takes a missing rule)")
    present = [c for c in cells if not is_missing(c)]
    text = any(not is_number(c) for c in present)
    if defaulted and text and len(set(present)) <= MAX_CLASSES:
        return (f"if {column!r} is what to predict, name it: [data] target = \"{column}\" or --target {column} "
                f"(the target is the last column, {target!r}, unless named); if it is a feature, {declare}")
    return declare


def _declared(request: Request) -> list[str]:
    return [c.name for c in request.columns] if request.fitted is None else request.fitted.names()


def _check_features(name: str, target: str, request: Request) -> None:
    """The target is never a feature."""
    if target in _declared(request):
        raise DataError(f"column {target!r}: expected feature columns in input {request.input!r}, received the "
                        f"target column among them", where=name,
                        hint=f"remove {target!r} from [inputs.{request.input}.columns], or name another target "
                             f"with [data] target / --target")


def _numbers(passes: Passes, target: str, features: list[str]) -> tuple[list[str], np.ndarray, str | None]:
    """One pass: the target's cells, the feature columns as float32 [rows, features], and the first feature column
    (in file order) holding a cell that is not a float32 number (None when every cell is one)."""
    shape = passes.shape
    x = np.empty((len(shape.lines), len(features)), dtype=np.float32)
    get_target, getters = shape.getter(target), [shape.getter(c) for c in features]
    cells: list[str] = []
    seen: dict[str, str] = {}
    bad = [False] * len(features)
    for start, chunk in passes.chunks():
        cells.extend(share(map(get_target, chunk), seen))
        for j, get in enumerate(getters):
            if not bad[j]:
                bad[j] = not _floats([number(get(r)) for r in chunk], x[start:start + len(chunk), j])
    return cells, x, next((c for c, b in zip(features, bad) if b), None)


def _floats(values: list[float | None], out: np.ndarray) -> bool:
    """Write the values into out (float32) when each is a number within float32's range; else False."""
    if any(v is None for v in values):
        return False
    a = np.array(values, dtype=np.float64)
    if not np.isfinite(a).all() or (len(a) and np.abs(a).max() > FLOAT32_MAX):
        return False
    out[:] = a
    return True


def _by_columns(name: str, passes: Passes, target: str, y: np.ndarray, classes: list[str] | None, task: str,
                splits: Splits, request: Request) -> Dataset:
    """Split the rows, fit the declared columns on the training split (or take the fitted table) and encode every
    split: x is float32 [N, Table.width()] in the spec's column order, whatever the file's. Each is a pass over the
    file: the fit holds the training split's declared cells; one pass encodes every row, CHUNK rows at a time."""
    declared = check_declared(name, passes.shape.columns, request)
    lines = passes.shape.lines
    numeric = frozenset(c.name for c in request.columns if c.type == "numeric")

    def cells(idx: np.ndarray) -> tuple[dict[str, Sequence[Any]], list[int]]:
        return passes.cells(declared, idx, numeric), lines[idx].tolist()

    every: list[Any] = []  # [table, its encoding of every row, or None when a row fails to encode]
    held: list[Held] = []  # the test split's cells, kept as the pass that encodes every row reads them

    def hold(idx: np.ndarray) -> None:
        held[:] = [Held(passes.shape, [*declared, target], idx)]

    def encode(table: Table, idx: np.ndarray) -> np.ndarray:
        if not every or every[0] is not table:  # one pass encodes every split's rows
            every[:] = [table, None]
            x, error = _encoded(passes, declared, table, None, name, held[0] if held else None)
            every[1] = x if error is None else None
        if every[1] is not None:
            return every[1][idx]
        # A row fails to encode: encode split by split (the training split first), as the whole-split encoding did,
        # and on the split's first failing chunk read the whole split's cells again (as text, as the message quotes
        # them): the message names the cell a whole-split encoding names first (column by column).
        x, error = _encoded(passes, declared, table, idx, name)
        if error is not None:
            table.encode(passes.cells(declared, idx), where=name, lines=lines[idx].tolist())
            raise error
        return x

    ds = fit_and_encode(name, target, y, classes, task, splits, request, cells, encode, hold)
    return dataclasses.replace(ds, held=held[0].table()) if held and every[1] is not None else ds


class Held:
    """The cells of some rows (`idx`: the test split's) of `columns`, taken from the chunks of a pass that reads
    every row: `archc train`'s report scores the test split from them, as `archc infer` reads it from the file,
    without reading the file again."""

    def __init__(self, shape: Shape, columns: list[str], idx: np.ndarray) -> None:
        self.keep = np.zeros(len(shape.lines), dtype=bool)
        self.keep[idx] = True
        self.getters = {c: shape.getter(c) for c in columns}
        self.cells: dict[str, list[str]] = {c: [] for c in columns}
        self.seen: dict[str, dict[str, str]] = {c: {} for c in columns}
        self.lines = shape.lines[np.sort(idx)].tolist()

    def take(self, start: int, chunk: list[list[str]]) -> None:
        """Keep the cells of the chunk's rows that are held (`start`: the chunk's first row's position)."""
        rows = list(itertools.compress(chunk, self.keep[start:start + len(chunk)]))
        for c, get in self.getters.items():
            self.cells[c].extend(share(map(get, rows), self.seen[c]))

    def table(self) -> RawTable:
        return RawTable(list(self.cells), self.cells, self.lines)


def _encoded(passes: Passes, declared: list[str], table: Table, idx: np.ndarray | None,
             name: str, held: Held | None = None) -> tuple[np.ndarray, DataError | None]:
    """The rows idx (sorted; None: every row) encoded CHUNK at a time into float32 [rows, width], or the first
    failing chunk's DataError; `held` (with idx None) keeps its rows' cells on the way."""
    lines = passes.shape.lines if idx is None else passes.shape.lines[idx]
    width = table.encode({c: [] for c in declared}, where=name).shape[1]
    x = np.zeros((len(lines), width), dtype=np.float32)
    getters = {c: passes.shape.getter(c) for c in declared}
    for start, chunk in passes.chunks(idx):
        rows = slice(start, start + len(chunk))
        try:
            x[rows] = table.encode({c: [get(r) for r in chunk] for c, get in getters.items()}, where=name,
                                   lines=lines[rows].tolist())
        except DataError as e:
            return x, e
        if held is not None:
            held.take(start, chunk)
    return x, None


def check_declared(name: str, available: list[str], request: Request) -> list[str]:
    """The declared column names, each one of the source's `available` columns (else a DataError with a close
    match)."""
    declared = _declared(request)
    absent = [c for c in declared if c not in available]
    if absent:
        close = difflib.get_close_matches(absent[0], available, n=1)
        raise DataError(f"expected columns {describe(absent)} (declared in the spec's input {request.input!r}), "
                        f"received columns {describe(available)}", where=name,
                        hint=f"did you mean {close[0]!r}?" if close else "")
    return declared


def fit_and_encode(name: str, target: str, y: np.ndarray, classes: list[str] | None, task: str, splits: Splits,
                   request: Request, cells: Callable[[np.ndarray], tuple[dict[str, list], list[int]]],
                   encode: Callable[[Table, np.ndarray], np.ndarray],
                   hold: Callable[[np.ndarray], None] | None = None) -> Dataset:
    """The Dataset of a tabular source read by column name (csv:, parquet:): split the rows by the target `y`,
    fit the declared columns on the training split's cells (`cells(idx)`: the declared columns' raw cells and row
    numbers of rows idx), or take the request's fitted table, and encode each split (`encode(table, idx)`).
    `hold(idx)`, before any encoding: the test split's rows, for a source that keeps their cells (Held)."""
    train, val, test = split_rows(len(y), y, task, splits)
    if hold is not None:
        hold(test)
    table = request.fitted
    if table is None:
        train_cells, train_lines = cells(train)
        table = fit(request.input, request.columns, train_cells, where=name, lines=train_lines, target=target)
        del train_cells
    parts = [Split(encode(table, idx), y[idx], idx) for idx in (train, val, test)]
    ds = finish(name, *parts, classes, task)
    return dataclasses.replace(ds, table=dataclasses.replace(table, target=target))


def target_column(header: list[str], target: str | None, name: str) -> str:
    """The target's column name: the named one, or the last."""
    if target is None:
        return header[-1]
    if target in header:
        return target
    close = difflib.get_close_matches(target, header, n=1)
    raise DataError(f"expected target column {target!r}, received columns {describe(header, 200)}", where=name,
                    hint=f"did you mean {close[0]!r}?" if close else "")


def class_name(value: float) -> str:
    """The name of a numeric class (a finite value): canonical, so '1.0', '1' and '+1' are one class, '1'."""
    return str(int(value)) if value == int(value) else repr(value)


def target_values(cells: list[str], column: str, lines: list[int], task: str | None,
            name: str) -> tuple[np.ndarray, list[str] | None, str]:
    """Decide the task and encode the target column (classes: the column's own values)."""
    for cell, line in zip(cells, lines):
        if is_missing(cell):
            raise DataError(f"row {line}, column {column!r}: expected a target value, received "
                            f"{'an empty cell' if cell == '' else describe(cell)}", where=name,
                            hint="remove the rows that have no target, or name another target column")
    parsed = [number(c) for c in cells]
    numeric = all(v is not None for v in parsed)
    values = np.array(parsed, dtype=np.float64) if numeric else None
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
            bad = next((c, ln) for c, ln in zip(cells, lines) if not is_number(c))
            raise DataError(f"row {bad[1]}, column {column!r}: expected a number for a regression target, "
                            f"received {describe(bad[0])}", where=name,
                            hint="name the target column with [data] target / --target if this is not it")
        big = np.abs(values) > FLOAT32_MAX
        if big.any():  # a regression target is float32, as the model's output
            i = int(np.argmax(big))
            raise DataError(f"row {lines[i]}, column {column!r}: expected {number_problem(float(values[i]))} for a "
                            f"regression target, received {cells[i]!r}", where=name)
        return values.astype(np.float32), None, task
    if numeric:
        # Numeric classes sort by value ("2" before "10") and are named canonically ("1.0" → "1").
        distinct = np.unique(values)
        names = [class_name(float(v)) for v in distinct]
        return np.searchsorted(distinct, values).astype(np.int64), names, task
    names = sorted(set(cells))
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup[c] for c in cells], dtype=np.int64), names, task
