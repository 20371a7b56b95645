"""A CSV file read in passes: each pass opens the file again and decodes it incrementally (UTF-8, a leading BOM
dropped), so a pass holds one record at a time, never the file's text or its cells. The csv: training source
(archc/data/tabular.py) reads the target column, then the training split's declared cells, then rows to encode,
each in a pass of its own.

Records are as `read_table` reads them: the lines after `skip`, blank records dropped, cells stripped, decimal commas
turned into points under `decimal=,`, each record with its line number in the file (a quoted cell may span lines).
"""
from __future__ import annotations

import csv
import functools
import io
import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from archc.data.columns import decimal_comma, number
from archc.errors import DataError
from archc.util import FLOAT32_MAX

if TYPE_CHECKING:
    from archc.data.tabular import Dialect

SNIFFED = ("\t", ";", "|")  # delimiters recognised when the first line has no comma
SAMPLE_LINES = 50  # lines the delimiter is recognised from
CHUNK = 8192  # rows parsed (or encoded) at a time in a pass
SHARED = 4096  # distinct cells of a column held once each (class names, categories): a str object per row otherwise


def recognise(lines: Iterable[str]) -> str:
    """A comma, unless the first non-blank line has none and a tab, ';' or '|' splits every sampled line alike
    (`lines`: the first SAMPLE_LINES lines, with their endings)."""
    sample = [ln for ln in lines if ln.strip()]
    if not sample or "," in sample[0]:
        return ","
    for d in SNIFFED:
        counts = {len(r) for r in csv.reader(sample, delimiter=d)}
        if len(counts) == 1 and counts.pop() > 1:
            return d
    return ","


def utf8(data: bytes, name: str) -> str:
    """The file's text (a leading BOM dropped, as Excel writes one); a byte that is not UTF-8 is named by line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"line {line}: expected UTF-8 text, received the byte 0x{data[e.start]:02x}", where=name,
                        hint="save the file as UTF-8 (it may be Latin-1 or Windows-1252)") from None


def point(cell: str) -> str:
    """A decimal-comma number ('3,45', '-,5', '1,5e3') with a decimal point; any other cell as it is."""
    return cell.replace(",", ".") if decimal_comma(cell) else cell


class CsvFile:
    """A CSV file's records, read again per pass (`records()`); the delimiter is the dialect's, or recognised from
    the first lines after the skipped ones."""

    def __init__(self, path: Path, name: str, dialect: "Dialect") -> None:
        self.path, self.name, self.dialect = path, name, dialect
        with self._open() as text:
            try:
                self._skip(text)
                # With decimal=',' and a comma delimiter, only quoted cells ("3,45") can hold a decimal comma.
                self.delimiter = dialect.delimiter or recognise(itertools.islice(text, SAMPLE_LINES))
            except (UnicodeDecodeError, OSError) as e:
                raise self._failure(e) from None

    def records(self) -> Iterator[tuple[list[str], int]]:
        """Non-blank records (cells stripped, decimal commas as points) and each one's line number in the file."""
        comma = self.dialect.decimal == ","
        with self._open() as text:
            skipped, line = 0, 0
            try:
                skipped = self._skip(text)
                reader = csv.reader(text, delimiter=self.delimiter)
                for row in reader:
                    line = reader.line_num + skipped
                    cells = [c.strip() for c in row]
                    if not any(cells):  # a blank record (or a line of blanks)
                        continue
                    yield ([point(c) for c in cells] if comma else cells), line
            except csv.Error as e:  # only the reader raises it: the line after the last one read is where
                self.check_utf8()  # a byte that is not UTF-8 anywhere is told first, as a whole-file decode would
                raise DataError(f"line {reader.line_num + skipped}: expected a CSV record, received one that fails "
                                f"to read ({e})", where=self.name) from None
            except (UnicodeDecodeError, OSError) as e:
                raise self._failure(e) from None

    def check_utf8(self) -> None:
        """Decode the whole file, a block at a time: a byte that is not UTF-8 is a DataError naming its line."""
        with self._open() as text:
            try:
                while text.read(1 << 20):
                    pass
            except (UnicodeDecodeError, OSError) as e:
                raise self._failure(e) from None

    def _open(self) -> IO[str]:
        try:
            return io.TextIOWrapper(self.path.open("rb"), encoding="utf-8-sig", newline="")
        except OSError as e:
            raise self._failure(e) from None

    def _skip(self, text: IO[str]) -> int:
        """Read past the dialect's skipped lines (stops at the end, whatever the count)."""
        skip = self.dialect.skip
        skipped = sum(1 for _ in itertools.islice(text, skip))
        if skipped < skip:
            raise DataError(f"skip: expected at most the file's {skipped} lines, received ?skip={skip}",
                            where=self.name)
        return skipped

    def _failure(self, e: Exception) -> DataError:
        """The DataError of a failed read: a byte that is not UTF-8 named by its line (found by reading the bytes
        again, only on the error), or the file's read error."""
        if isinstance(e, UnicodeDecodeError):
            try:
                utf8(self.path.read_bytes(), self.name)
            except DataError as error:
                return error
        return DataError(f"expected a readable CSV file, received one that fails to read ({e})", where=self.name)


@dataclass(frozen=True)
class Shape:
    """What the first pass finds: the column names, each data row's line number, the layout ('header', 'no header'
    or 'sklearn') and, for scikit-learn's layout, the class names its last cell indexes."""

    columns: list[str]
    lines: np.ndarray  # int64 [rows]
    layout: str
    classes: list[str] | None = None

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {c: j for j, c in enumerate(self.columns)}

    def getter(self, column: str) -> Callable[[list[str]], str]:
        """A record's cell of `column` (scikit-learn's class index read as its class name)."""
        j = self.index[column]
        if self.classes is not None and j == len(self.columns) - 1:
            classes = self.classes
            return lambda r: classes[int(r[-1])]
        return operator.itemgetter(j)


class Passes:
    """Passes over a CSV's data rows (the file read again per pass), holding only what each pass returns."""

    def __init__(self, file: CsvFile, shape: Shape) -> None:
        self.file, self.shape = file, shape

    def rows(self) -> Iterator[list[str]]:
        """Every data row's cells, in file order (the header record skipped)."""
        records = self.file.records()
        if self.shape.layout != "no header":
            next(records, None)
        return (cells for cells, _ in records)

    def chunks(self, idx: np.ndarray | None = None) -> Iterator[tuple[int, list[list[str]]]]:
        """The data rows (or the rows idx, sorted) CHUNK at a time, each chunk with its first row's position."""
        rows: Iterable[list[str]] = self.rows()
        if idx is not None:
            keep = np.zeros(len(self.shape.lines), dtype=bool)
            keep[idx] = True
            rows = itertools.compress(rows, keep)
        start = 0
        while chunk := list(itertools.islice(rows, CHUNK)):
            yield start, chunk
            start += len(chunk)

    def cells(self, columns: list[str], idx: np.ndarray | None = None,
              numeric: frozenset[str] = frozenset()) -> dict[str, Sequence[Any]]:
        """The cells of `columns` in the data rows (or the rows idx, sorted); a repeated cell is one str object, and
        a `numeric` column's cells are Numbers (8 bytes a number, not a str object each)."""
        getters = {c: self.shape.getter(c) for c in columns}
        text: dict[str, list[str]] = {c: [] for c in columns if c not in numeric}
        shared: dict[str, dict[str, str]] = {c: {} for c in text}
        values: dict[str, list[np.ndarray]] = {c: [] for c in columns if c in numeric}
        others: dict[str, dict[int, str]] = {c: {} for c in values}
        for start, chunk in self.chunks(idx):
            for c, get in getters.items():
                if c in text:
                    text[c].extend(share(map(get, chunk), shared[c]))
                else:
                    values[c].append(_values([get(r) for r in chunk], start, others[c]))
        return {c: text[c] if c in text else Numbers(np.concatenate(values[c] or [np.empty(0)]), others[c])
                for c in columns}


def _values(cells: list[str], start: int, others: dict[int, str]) -> np.ndarray:
    """The cells' values (float64); a cell that is not a float32 number is kept in `others` (by row, from `start`)
    and NaN in the values."""
    parsed = [number(c) for c in cells]
    out = np.array([math.nan if v is None else v for v in parsed], dtype=np.float64)
    clean = np.isfinite(out) & (np.abs(out) <= FLOAT32_MAX)
    for i in np.flatnonzero(~clean).tolist():
        others[start + i] = cells[i]
    return out


class Numbers(Sequence):
    """A numeric column's cells: each number as its float value, each other cell (missing, text, out of float32's
    range) as its text, so fitting reads them as it reads the text (archc.data.columns.number of the text is the
    value)."""

    def __init__(self, values: np.ndarray, others: dict[int, str]) -> None:
        self.values, self.others = values, others

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        return self.others.get(i, float(self.values[i]))

    def __iter__(self) -> Iterator[Any]:
        if not self.others:
            return iter(self.values.tolist())
        return (self.others.get(i, v) for i, v in enumerate(self.values.tolist()))


def share(cells: Iterable[str], seen: dict[str, str]) -> list[str]:
    """The cells, each the first str object seen of its text while `seen` holds fewer than SHARED texts."""
    out = []
    for cell in cells:
        first = seen.get(cell)
        if first is None:
            if len(seen) < SHARED:
                seen[cell] = cell
            first = cell
        out.append(first)
    return out
