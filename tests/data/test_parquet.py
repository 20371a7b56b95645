"""parquet: reads a Parquet file (or a folder of them) row group by row group, exactly as csv: reads the same rows:
the same arrays, splits and fitted table; bad files are one located DataError."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.data import load
from archc.data.columns import Column, Request, is_missing, number
from archc.data.tabular import read_table
from archc.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "penguins.toml"
CSV = ROOT / "specs" / "data" / "penguins.csv"
PENGUINS = Request("row", (
    Column("island", "categorical", categories=("Biscoe", "Dream", "Torgersen")),
    Column("bill_length_mm", "numeric", missing="median"),
    Column("body_mass_g", "numeric", missing="mean", indicator=True),
    Column("sex", "categorical", missing="most_frequent", max_categories=3, indicator=True),
    Column("year", "categorical", max_categories=3, encode="embedding", dim=2),
))


def penguins_table() -> pa.Table:
    """The CSV's rows as typed Arrow columns: numbers as int64/float64, text as strings, NA as null."""
    raw = read_table(CSV, "p")
    out = {}
    for c in raw.columns:
        cells = raw.cells[c]
        present = [v for v in cells if not is_missing(v)]
        if all(number(v) is not None for v in present):
            values = [None if is_missing(v) else number(v) for v in cells]
            integral = all(v == int(v) for v in values if v is not None)
            out[c] = pa.array([None if v is None else int(v) for v in values] if integral else values,
                              pa.int64() if integral else pa.float64())
        else:
            out[c] = pa.array([None if is_missing(v) else v for v in cells], pa.string())
    return pa.table(out)


@pytest.fixture(scope="module")
def penguins_parquet(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pq") / "penguins.parquet"
    pq.write_table(penguins_table(), path, row_group_size=50)  # 344 rows: 7 row groups
    assert pq.ParquetFile(path).num_row_groups == 7
    return path


def same(a, b) -> None:
    assert a.task == b.task and a.classes == b.classes
    for s in ("train", "val", "test"):
        x, y = getattr(a, s), getattr(b, s)
        assert np.array_equal(x.x, y.x) and x.x.dtype == y.x.dtype and np.array_equal(x.y, y.y)


def test_penguins_parquet_gives_the_csv_arrays_splits_and_table(penguins_parquet):
    for seed in (0, 3):
        a = load(f"csv:{CSV}", target="species", columns=PENGUINS, seed=seed)
        b = load(f"parquet:{penguins_parquet}", target="species", columns=PENGUINS, seed=seed)
        same(a, b)
        assert a.table.to_json() == b.table.to_json()
    # and with a fitted table (scoring) the encoding is the same too
    fitted = Request("row", PENGUINS.columns, a.table)
    same(load(f"csv:{CSV}", target="species", columns=fitted, seed=3),
         load(f"parquet:{penguins_parquet}", target="species", columns=fitted, seed=3))


def test_numeric_features_without_declared_columns(tmp_path):
    n = 40
    t = pa.table({"a": np.arange(n, dtype=np.int32), "b": np.linspace(0, 1, n), "y": [i % 3 for i in range(n)]})
    pq.write_table(t, tmp_path / "t.parquet", row_group_size=7)
    lines = ["a,b,y"] + [f"{a},{b!r},{y}" for a, b, y in zip(*(t.column(c).to_pylist() for c in "aby"))]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    a, b = load(f"csv:{tmp_path / 't.csv'}"), load(f"parquet:{tmp_path / 't.parquet'}")
    same(a, b)
    assert b.features == ["a", "b"] and b.classes == ["0", "1", "2"]


def test_a_folder_of_files_reads_as_their_rows_in_name_order(tmp_path, penguins_parquet):
    t = penguins_table()
    (tmp_path / "d").mkdir()
    pq.write_table(t.slice(0, 100), tmp_path / "d" / "a.parquet", row_group_size=30)
    pq.write_table(t.slice(100), tmp_path / "d" / "b.parquet", row_group_size=64)
    (tmp_path / "d" / "notes.txt").write_text("not read")
    same(load(f"parquet:{penguins_parquet}", target="species", columns=PENGUINS),
         load(f"parquet:{tmp_path / 'd'}", target="species", columns=PENGUINS))


def test_schema_mismatch_names_the_file(tmp_path):
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": ["u", "v"]}), tmp_path / "1.parquet")
    pq.write_table(pa.table({"a": ["x", "z"], "y": ["u", "v"]}), tmp_path / "2.parquet")
    with pytest.raises(DataError, match=r"2\.parquet.*|expected the schema of 1\.parquet") as e:
        load(f"parquet:{tmp_path}")
    assert "2.parquet" in str(e.value) and "a: string" in str(e.value)


def test_missing_target_column_and_nulls(tmp_path):
    t = pa.table({"a": [1.0, None, 3.0, 4.0] * 5, "flag": [True, False, None, True] * 5,
                  "y": ["p", "q", "p", "q"] * 5})
    pq.write_table(t, tmp_path / "t.parquet", row_group_size=6)
    with pytest.raises(DataError, match=r"expected target column 'lab', received columns \['a', 'flag', 'y'\]") as e:
        load(f"parquet:{tmp_path / 't.parquet'}", target="lab")
    assert "parquet:" in str(e.value)
    with pytest.raises(DataError, match=r"row 2, column 'a': expected a number, received"):
        load(f"parquet:{tmp_path / 't.parquet'}")  # a null is a missing cell: numeric features refuse it
    req = Request("row", (Column("a", "numeric", missing="mean", indicator=True),
                          Column("flag", "boolean", missing="most_frequent")))
    ds = load(f"parquet:{tmp_path / 't.parquet'}", columns=req, val_fraction=0.0, test_fraction=0.0)
    assert ds.train.x.shape == (20, 3) and ds.train.x[:, 1].sum() == 5  # five nulls, marked
    assert set(np.unique(ds.train.x[:, 2])) == {0.0, 1.0}
    with pytest.raises(DataError, match=r"row 2, column 'a': expected a value, received a missing cell"):
        load(f"parquet:{tmp_path / 't.parquet'}", columns=Request("row", (Column("a", "numeric"),)))


def test_dates_are_refused_by_column(tmp_path):
    import datetime
    t = pa.table({"d": [datetime.date(2020, 1, i + 1) for i in range(6)], "y": ["a", "b"] * 3})
    pq.write_table(t, tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"column 'd': expected numbers, strings or booleans, received Arrow type "
                                        r"date32"):
        load(f"parquet:{tmp_path / 't.parquet'}")


def test_corrupt_file_is_exit_1_via_the_cli(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    r = CliRunner().invoke(main, ["train", str(SPEC), "--data", f"parquet:{tmp_path / 'bad.parquet'}", "--out",
                                  str(tmp_path / "run"), "--quiet", "--device", "cpu"])
    assert r.exit_code == 1, r.output
    assert "expected a Parquet file, received one that fails to read" in r.output and "Traceback" not in r.output


def test_penguins_trains_alike_on_csv_and_parquet_and_infers_on_parquet(tmp_path, penguins_parquet):
    acc = {}
    for kind, source in (("csv", f"csv:{CSV}"), ("parquet", f"parquet:{penguins_parquet}")):
        r = CliRunner().invoke(main, ["train", str(SPEC), "--data", source, "--epochs", "3", "--out",
                                      str(tmp_path / kind), "--quiet", "--device", "cpu"])
        assert r.exit_code == 0, r.output
        acc[kind] = json.loads((tmp_path / kind / "result.json").read_text())["test"]["accuracy"]
    assert acc["csv"] == acc["parquet"]
    onnx = next((tmp_path / "parquet").glob("*.onnx"))
    outs = {}
    for kind, source in (("csv", f"csv:{CSV}"), ("parquet", f"parquet:{penguins_parquet}")):
        r = subprocess.run([sys.executable, "-m", "archc.cli", "infer", str(onnx), "--input", source, "--json"],
                           capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
        assert r.returncode == 0, r.stderr
        outs[kind] = json.loads(r.stdout)
    rows = {kind: [rec.pop("row") for rec in out["records"]] for kind, out in outs.items()}
    assert rows["csv"] == [n + 1 for n in rows["parquet"]]  # a CSV's line (after its header), a parquet row from 1
    assert outs["csv"] == outs["parquet"]
