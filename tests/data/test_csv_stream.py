"""The csv: source streams (issue 20): it reads the file in passes and holds the encoded float rows, the target and
the row numbers, never every cell as text; its arrays and messages are those of reading every cell with read_table."""
from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archc.data.csvfile
from archc.data import load
from archc.data.arrays import from_arrays, split_rows
from archc.data.base import Splits
from archc.data.columns import Column, Request
from archc.data.dataset import Dataset
from archc.data.tabular import (Dialect, _column_floats, check_declared, fit_and_encode, read_table, target_column,
                                target_values)
from archc.errors import DataError
from archc.labels import CLASSES

ROOT = Path(__file__).resolve().parents[2]
N = 30_000  # rows of the smaller file; the larger has 4 N
CELLS = 10  # cells a row: 9 features and the target
# A cell held as a Python str costs at least 57 bytes (a 49-byte ASCII str object of a few characters, and its
# 8-byte pointer in a list): holding every cell as text grows by >= 570 bytes a row, and did grow by ~1,050. The
# streaming loader holds, a row: the float32 features (40 bytes, and their split copies, 40), the row number and
# the label (8 + 8), the target's parsed values while its task is decided (~50) and, with declared columns, the
# training split's numbers for the fit (9 x 8) and one column's Python floats while it is fitted (~100): < 400.
BYTES_A_ROW = 400

PEAK = """
import resource, sys
from archc.data import load
from archc.data.columns import Column, Request
request = Request("row", tuple(Column(f"f{i}", "numeric", missing="mean") for i in range(9)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
load("csv:" + sys.argv[1], columns=request if sys.argv[2] == "columns" else None)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)  # KiB on Linux
"""


def _write(path: Path, rows: int) -> Path:
    rng = random.Random(0)
    with open(path, "w") as f:
        f.write(",".join(f"f{i}" for i in range(CELLS - 1)) + ",label\n")
        for r in range(rows):
            f.write(",".join(f"{rng.random():.6f}" for _ in range(CELLS - 1)) + f",{r % 3}\n")
    return path


def _peak_kib(path: Path, mode: str) -> int:
    """The growth of peak RSS while loading the file, in a fresh process (KiB)."""
    done = subprocess.run([sys.executable, "-c", PEAK, str(path), mode], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is KiB on Linux")
@pytest.mark.parametrize("mode", ["numbers", "columns"])
def test_memory_grows_by_the_encoded_rows_not_the_cells(tmp_path, mode):
    small, large = _write(tmp_path / "small.csv", N), _write(tmp_path / "large.csv", 4 * N)
    grown = (_peak_kib(large, mode) - _peak_kib(small, mode)) * 1024
    assert grown < 3 * N * BYTES_A_ROW, f"{grown / (3 * N):.0f} bytes a row"


# A BOM, CRLF line ends (and a CR alone), leading lines to skip, blank lines, quoted cells holding the delimiter, a
# quote and a line break, decimal commas and missing cells; NUMERIC has a blank header cell (read as column_1).
TRICKY = ('\ufeffexported by a tool\r\n\r\n'
          'id;a;b;note;label\r\n'
          '1;3,5;-1,25e1;"plain";yes\r\n'
          '\r\n'
          '2;"4,0";0;"two\r\nlines; and ""quotes""";no\r\n'
          '3;,5;7;;yes\r'
          '4;1;2;"x";no\n'
          '   \n'
          '5;2,5;3;"y";yes\r\n'
          '6;1e3;-0,0;"plain";no\r\n'
          '7;8;9;"x";yes\r\n'
          '8;0,125;1;"two\r\nlines; and ""quotes""";no\r\n'
          '9;6;NA;"y";yes\r\n'
          '10;5;4;"plain";no\r\n')
NUMERIC = ('\ufeffexported by a tool\r\n\r\n'
           ';a;b;score\r\n'
           '1;3,5;-1,25e1;"0,5"\r\n'
           '\r\n'
           '2;"4,0";0;"1\r\n"\r\n'
           '3;,5;7;2,75\r'
           '4;1;2;-3\n'
           '   \n'
           + "".join(f'{i};{i},5;"{i}";{i * 1.5}\r\n'.replace(".", ",") for i in range(5, 11)))
OPTIONS = {"delimiter": ";", "decimal": ",", "skip": 2}
DIALECT = Dialect(";", True, 2, ",")
DECLARED = Request("row", (Column("a", "numeric"), Column("b", "numeric", missing="median", indicator=True),
                           Column("note", "categorical", max_categories=4, missing="most_frequent")))


def by_read_table(path: Path, dialect: Dialect, request: Request | None, splits: Splits) -> Dataset:
    """What csv: gave when it held every cell: read_table, then the same target, split, fit and encoding."""
    raw = read_table(path, "f", dialect)
    column = target_column(raw.columns, None, "f")
    y, classes, task = target_values(raw.cells[column], column, raw.lines, None, "f")
    if request is None:
        x = np.stack([_column_floats(raw.cells[c], c, raw.lines, "f", str) for c in raw.columns if c != column], 1)
        return from_arrays("f", x, y, classes=classes, task=task, splits=splits)
    declared = check_declared("f", raw.columns, request)

    def cells(idx):
        return {c: [raw.cells[c][i] for i in idx] for c in declared}, [raw.lines[i] for i in idx]

    return fit_and_encode("f", column, y, classes, task, splits, request, cells,
                          lambda table, idx: table.encode(cells(idx)[0], where="f", lines=cells(idx)[1]))


def _same(ds: Dataset, ref: Dataset) -> None:
    assert ds.classes == ref.classes and ds.task == ref.task
    for got, want in zip((ds.train, ds.val, ds.test), (ref.train, ref.val, ref.test)):
        assert got.x.dtype == want.x.dtype and got.x.tobytes() == want.x.tobytes()  # bit for bit
        assert got.y.dtype == want.y.dtype and got.y.tobytes() == want.y.tobytes()


@pytest.mark.parametrize("chunk", [2, 8192])
def test_arrays_are_bit_identical_to_reading_every_cell(tmp_path, monkeypatch, chunk):
    """Rows encoded 2 at a time (chunks end inside the file) or all in one chunk give the same bits."""
    monkeypatch.setattr(archc.data.csvfile, "CHUNK", chunk)
    path = tmp_path / "tricky.csv"
    path.write_bytes(TRICKY.encode())
    splits = Splits(0.2, 0.2, 3)
    ds = load(f"csv:{path}", columns=DECLARED, val_fraction=0.2, test_fraction=0.2, seed=3, **OPTIONS)
    ref = by_read_table(path, DIALECT, DECLARED, splits)
    _same(ds, ref)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 10 and ds.table == ref.table
    numeric = tmp_path / "numeric.csv"  # the numeric read (no declared columns), the last column a regression target
    numeric.write_bytes(NUMERIC.encode())
    ds = load(f"csv:{numeric}", val_fraction=0.2, test_fraction=0.2, seed=3, **OPTIONS)
    _same(ds, by_read_table(numeric, DIALECT, None, splits))
    assert ds.task == "regression" and ds.features == ["column_1", "a", "b"]


def test_a_bad_feature_is_named_in_column_order(tmp_path):
    """The first bad cell of the first bad column (an extra pass finds it), as reading column by column named it."""
    path = tmp_path / "bad.csv"
    path.write_text("a,b,y\n" + "".join(f"{i},{'x' if i == 3 else i},{i % 2}\n" for i in range(8)) + "oops,1,0\n")
    with pytest.raises(DataError, match=r"row 10, column 'a': expected a number, received 'oops'"):
        load(f"csv:{path}")


def test_an_encoding_error_names_the_cell_a_whole_split_names(tmp_path, monkeypatch):
    """Encoded 2 rows at a time, a later chunk's bad cell in an earlier column is still the one named: the fit
    sees neither (both rows are in the test split), the encoding reads column a before column b."""
    monkeypatch.setattr(archc.data.csvfile, "CHUNK", 2)
    y = np.arange(40) % 2
    _, _, test = split_rows(40, y, CLASSES, Splits())
    rows = [f"{i},{'cd'[i % 2]},{i % 2}" for i in range(40)]
    first, last = int(test[0]), int(test[-1])
    rows[first] = f"{first},zzz,{y[first]}"  # an unknown category in column b, early
    rows[last] = f",d,{y[last]}"  # a missing cell in column a (missing = "error"), late
    path = tmp_path / "enc.csv"
    path.write_text("a,b,y\n" + "\n".join(rows) + "\n")
    request = Request("row", (Column("a", "numeric"), Column("b", "categorical", categories=("c", "d"))))
    with pytest.raises(DataError, match=rf"row {last + 2}, column 'a': expected a value, received a missing cell"):
        load(f"csv:{path}", columns=request)
    with pytest.raises(DataError, match=rf"row {last + 2}, column 'a'"):
        by_read_table(path, Dialect(), request, Splits())
