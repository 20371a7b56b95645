"""Tabular input parsing is total and linear (issue 19): one number grammar for every CSV reader, any byte sequence
a user error at worst, header width / category count / skip counts at 100,000 in seconds, decimal commas read on
request and hinted otherwise."""
from __future__ import annotations

import random
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from archc.data import load
from archc.data.columns import FLOAT32_MAX, Column, Request, fit, number
from archc.data.survey import survey, toml_block
from archc.data.tabular import Dialect, read_table
from archc.errors import ArchcError, DataError
from archc.runtime.io import read_inputs

N = 100_000


@pytest.mark.parametrize("text, value", [("1", 1.0), (" -2.5e3 ", -2500.0), (".5", 0.5), ("7.", 7.0),
                                         ("+1E-2", 0.01), ("inf", float("inf")), ("-Infinity", float("-inf")),
                                         ("1e39", 1e39)])
def test_numbers_in_the_csv_grammar(text, value):
    assert number(text) == value


@pytest.mark.parametrize("text", ["\u00b2", "\u0661\u0662", "1_000", "0x10", "1,5", "", "e5", "1e", "--1", "1 2",
                                  "\u00bd", "\uff11"])
def test_other_text_is_not_a_number(text):
    """'²'.isdigit() and float('١٢') == 12.0 are Python's, not a CSV's: text, never an exit 3."""
    assert number(text) is None


def test_numbers_of_every_magnitude_are_total():
    assert number(10**400) == 1e308 and number(-(10**400)) == -1e308   # out of float32's range, no OverflowError
    assert number(True) == 1.0 and number(np.int64(3)) == 3.0 and number([1]) is None and number(None) is None
    assert number("9" * 5000) == float("inf")   # int() refuses 5000 digits; the grammar reads a float


def test_any_byte_sequence_is_a_table_or_one_data_error(tmp_path):
    """Random CSV-ish bytes (invalid UTF-8, NUL, BOMs, quotes, ragged rows, Unicode digits, huge numbers) through
    read_table, survey, the csv: source with and without declared columns and infer's CSV reader."""
    atoms = [b",", b";", b"\n", b"\r\n", b'"', b"\x00", b"\xef\xbb\xbf", b"\xff", b"\xc3", b"1", b"2.5", b"1e39",
             b"-", b"nan", b"inf", b"NA", b"", b" ", b"a", b"b", b"\xc2\xb2", b"3,45", b"\xd9\xa1", b"1_0",
             b"column_2", b"99999999999999999999999", b"?", b"true"]
    rng = random.Random(19)
    path = tmp_path / "f.csv"
    request = Request("row", (Column("a", "numeric", missing="mean"),
                              Column("b", "categorical", max_categories=5, unknown="ignore", missing="most_frequent")))
    model = SimpleNamespace(inputs={"x": SimpleNamespace(name="x", shape=("N", 3), dtype="float32")})
    for i in range(300):
        body = b"".join(rng.choice(atoms) for _ in range(rng.randint(0, 50)))
        path.write_bytes(b"a,b,c\n" + body if i % 2 else body)
        calls = [lambda d=d: _survey(path, d) for d in (Dialect(), Dialect(header=False), Dialect(skip=1),
                                                        Dialect(delimiter=";", decimal=","))]
        calls += [lambda: load(f"csv:{path}"), lambda: load(f"csv:{path}", columns=request),
                  lambda: read_inputs(path, model)]
        for call in calls:
            try:
                call()
            except ArchcError:
                pass


def _survey(path: Path, dialect: Dialect) -> None:
    raw = read_table(path, "f", dialect)
    toml_block(path, raw, raw.columns[-1], "row", survey(raw, raw.columns[-1]))


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_a_header_of_100000_columns_reads_in_seconds(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(N)) + "\n" + ",".join(["1"] * N) + "\n")
    assert _seconds(lambda: survey(read_table(path, "w"), f"c{N - 1}")) < 15  # was minutes: a count per name
    path.write_text(",".join(f"c{i}" for i in range(N - 1)) + ",c7\n" + ",".join(["1"] * N) + "\n")
    with pytest.raises(DataError, match=f"received 'c7' twice \\(columns 8 and {N} of line 1\\)"):
        read_table(path, "w")


def test_fitting_100000_categories_takes_seconds():
    cells = [f"k{i}" for i in range(N)] + ["k1"]
    table = None

    def fitted():
        nonlocal table
        table = fit("row", [Column("k", "categorical", max_categories=N, unknown="most_frequent")], {"k": cells})

    assert _seconds(fitted) < 15  # was minutes: a membership test on a tuple per category
    assert len(table.columns[0].categories) == N and table.columns[0].most_frequent == "k1"
    listed = tuple(reversed(cells[:N]))
    assert _seconds(lambda: fit("row", [Column("k", "categorical", categories=listed)], {"k": cells})) < 15


def test_a_skip_count_past_the_end_stops_at_the_end(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("a,b\n1,2\n")
    for skip in (N, 100_000_000, 10**30):
        with pytest.raises(DataError, match=f"skip: expected at most the file's 2 lines, received \\?skip={skip}"):
            assert _seconds(lambda: read_table(path, "s", Dialect(skip=skip))) < 2
    raw = read_table(path, "s", Dialect(skip=1, header=False))
    assert raw.cells == {"column_1": ["1"], "column_2": ["2"]} and raw.lines == [2]


def test_decimal_commas_read_as_numbers_on_request(tmp_path):
    path = tmp_path / "dc.csv"
    path.write_text("a;b;label\n3,45;x;u\n-0,5;y;v\n1,5e2;x;u\n2;y;v\n")
    assert read_table(path, "d", Dialect(decimal=",")).cells["a"] == ["3.45", "-0.5", "1.5e2", "2"]
    ds = load(f"csv:{path}?decimal=,", columns=Request("row", (Column("a", "numeric", scale=False),)),
              val_fraction=0, test_fraction=0)
    assert sorted(ds.train.x[:, 0].tolist()) == pytest.approx([-0.5, 2, 3.45, 150])
    surveyed = {s.name: s for s in survey(read_table(path, "d"), "label")}
    assert surveyed["a"].column is None and surveyed["a"].decimal_comma == "3,45" and "?decimal=," in surveyed["a"].note
    assert not surveyed["b"].decimal_comma
    path.write_text('a,label\n"3,45",u\n"-1,5",v\n')  # a comma file: only quoted cells hold a decimal comma
    assert read_table(path, "d", Dialect(decimal=",")).cells["a"] == ["3.45", "-1.5"]


def test_a_blank_header_cell_is_named_by_position(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text(",a,b\n0,1,x\n1,2,y\n")  # a pandas index column: read as column_1
    assert read_table(path, "b").columns == ["column_1", "a", "b"]
    path.write_text("column_3,a,\n0,1,x\n1,2,y\n")
    with pytest.raises(DataError, match=r"line 1, column 3: expected a column name, received a blank header cell "
                                        r"\(read as 'column_3', which column 1 is named\)"):
        read_table(path, "b")


def test_float32_range_is_checked_where_cells_become_numbers(tmp_path):
    table = fit("row", [Column("a", "numeric")], {"a": ["1", "2"]})
    with pytest.raises(DataError, match=r"row 2, column 'a': expected a number within float32's range"):
        table.encode({"a": ["1", f"{FLOAT32_MAX * 1.01!r}"]})
    assert table.encode({"a": [f"{FLOAT32_MAX / 4!r}"]}).dtype == np.float32
    with pytest.raises(DataError, match=r"row 1, column 'a': expected a value within float32's range once "
                                        r"standardized \(\(v - 1.5\) / 0.5, the training split's mean and std\)"):
        table.encode({"a": [f"{FLOAT32_MAX!r}"]})  # in range, but not (v - mean) / std
    path = tmp_path / "t.csv"
    path.write_text("a,y\n1,1e39\n2,3.5\n")
    with pytest.raises(DataError, match=r"row 2, column 'y': expected a number within float32's range .* for a "
                                        r"regression target, received '1e39'"):
        load(f"csv:{path}", task="regression")


def test_infer_csv_numbers_beyond_int64_read_as_floats(tmp_path):
    model = SimpleNamespace(inputs={"x": SimpleNamespace(name="x", shape=("N", 2), dtype="float32")})
    path = tmp_path / "x.csv"
    path.write_text("99999999999999999999999,1\n-9223372036854775808,2\n")
    x = read_inputs(path, model)["x"]
    assert x.dtype == np.float64 and x[0, 0] == 1e23
    path.write_text("9223372036854775807,1\n")
    assert read_inputs(path, model)["x"].dtype == np.int64


def test_float32_range_in_the_other_tabular_sources(tmp_path):
    """jsonl: and npz: features and regression targets: a value beyond float32 is named, never an inf behind
    numpy's overflow warning (pytest's -W error would turn that warning into a failure here too)."""
    lines = [{"x": [0.5, 1], "y": i * 0.37} for i in range(12)]
    lines[3]["x"] = [1e39, 1]
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(map(__import__("json").dumps, lines)) + "\n")
    with pytest.raises(DataError, match=r"line 4, 'x': expected numbers within float32's range .*received 1e\+39"):
        load(f"jsonl:{path}", task="regression")
    lines[3]["x"], lines[5]["y"] = [0.5, 1], -1e300
    path.write_text("\n".join(map(__import__("json").dumps, lines)) + "\n")
    with pytest.raises(DataError, match=r"expected regression targets within float32's range .*received -1e\+300 at "
                                        r"example 5"):
        load(f"jsonl:{path}", task="regression")
    path.write_text('{"x": [%d], "y": 1}\n' % 10**400)
    with pytest.raises(DataError, match=r"line 1, 'x': expected a number or a list of numbers"):
        load(f"jsonl:{path}")
    np.savez(tmp_path / "n.npz", x=np.array([[1.0, 2.0], [3.0, 1e39]]), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"expected features within float32's range .*received 1e\+39 at example 1"):
        load(f"npz:{tmp_path / 'n.npz'}")


@pytest.mark.parametrize("text", ["\u00b2x2", "2x\u0663", "\uff12x2", "99999999999x1", "0x4"])
def test_an_image_size_is_ascii_digits(text):
    """images:?size= reads ASCII digits; '²'.isdigit() passed to int() was a Python message, not archc's."""
    from archc.data.images import parse_size

    with pytest.raises(ValueError, match="expected HEIGHTxWIDTH such as 28x28"):
        parse_size(text)
