"""Golden messages for issue 19's CSV classes: total parsing of tabular input (Unicode digits, skip counts past the
end, oversized fields), numbers that overflow float32 named by file, row and column with no numpy warning in front,
decimal commas, blank header cells, JSON records for a model with a fitted table. Each case: the exact first line
of stderr and exit 1. Paths are written as TMP/...
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.data.columns import Column, fit


def _models(folder: Path) -> tuple[Path, Path]:
    """(a model with a fitted table of columns a (numeric) and b (categorical x/y/z), a plain model of 3 float32
    features), exported untrained: only how their inputs are read matters here."""
    from archc.export import export
    from archc.lower import lower
    from archc.pipeline import compile_spec

    table = fit("row", [Column("a", "numeric"), Column("b", "categorical", categories=("x", "y", "z"))],
                {"a": ["0.5", "1.5", "2"], "b": ["x", "y", "z"]}, target="c")
    out = []
    for name, width, meta in (("tab", table.width(), {"columns": table.to_json(), "labels": ["0", "1"]}),
                              ("plain", 3, {})):
        spec = {"archc": 1, "model": {"name": name}, "inputs": {"row" if meta else "x": {"shape": [width]}},
                "task": {"kind": "classification", **({"labels": ["0", "1"]} if meta else {})},
                "layers": [{"op": "linear", "out_features": 2}]}
        compiled = compile_spec(spec)
        path = folder / f"{name}.onnx"
        export(compiled, path, module=lower(compiled.graph, seed=0), extra_metadata=meta or None)
        out.append(path)
    return out[0], out[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    return _models(tmp_path_factory.mktemp("m19csv"))


def _spec(tmp: Path, data: str, columns: dict | None) -> Path:
    """A tabular spec (declared columns) or a plain one of numeric features, trained on csv:TMP/<data>."""
    inputs = {"row": {"columns": columns}} if columns else {"x": {"shape": [2]}}
    spec = {"archc": 1, "model": {"name": "t"}, "inputs": inputs, "task": {"kind": "classification"},
            "layers": [{"op": "linear", "out_features": 2}], "train": {"epochs": 1, "batch_size": 4},
            "data": {"source": f"csv:{tmp / data}", "target": "c"}}
    (tmp / "s.json").write_text(json.dumps(spec))
    return tmp / "s.json"


def _rows(tmp: Path, name: str, text: str) -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def _table(cell: str, sep: str = ",") -> str:
    """A 12-row a,b,c table whose 3rd row (line 4) has `cell` in column a."""
    rows = [[f"{i / 10}", f"{i % 3}", f"{i % 2}"] for i in range(12)]
    rows[2][0] = cell
    return "\n".join(sep.join(r) for r in [["a", "b", "c"], *rows]) + "\n"


Case = Callable[..., list]
CASES: dict[str, tuple[Case, str]] = {}


def case(expected: str):
    def add(fn: Case) -> Case:
        CASES[fn.__name__] = (fn, expected)
        return fn
    return add


# ---- total: no exit 3 on any CSV --------------------------------------------------------------------------------
@case("error: csv:TMP/u.csv: line 1: expected the column names, received 4 cells while every row after it has 3: "
      "the first line is not a header (skip it: 'csv:TMP/u.csv?skip=1&header=false' (columns named column_1, "
      "column_2, ...))")
def unicode_digit_in_the_first_line(tmp, models):
    return ["columns", _rows(tmp, "u.csv", "2\u00b2,2,x,y\n1,2,0\n4,5,1\n")]


@case("error: TMP/w.csv: could not read the file as .csv: field larger than field limit (131072)")
def infer_csv_field_over_the_csv_limit(tmp, models):
    return ["infer", models[1], "--input", _rows(tmp, "w.csv", "1,2," + "3" * 200_000 + "\n")]


@case("error: csv:TMP/l.csv: line 3: expected UTF-8 text, received the byte 0xe9 (save the file as UTF-8 (it may be "
      "Latin-1 or Windows-1252))")
def latin1_byte_named_by_line(tmp, models):
    (tmp / "l.csv").write_bytes(b"a,b\n1,2\n3,caf\xe9\n")
    return ["columns", tmp / "l.csv"]


@case("error: csv:TMP/f.csv: line 3: expected a CSV record, received one that fails to read (field larger than "
      "field limit (131072))")
def csv_field_over_the_csv_limit(tmp, models):
    return ["columns", _rows(tmp, "f.csv", "a,b\n1,2\n3," + "4" * 200_000 + "\n")]


# ---- linear: a skip count past the end stops at the end ---------------------------------------------------------
@case("error: csv:TMP/s.csv?skip=100000000: skip: expected at most the file's 3 lines, received ?skip=100000000")
def skip_past_the_end_of_the_file(tmp, models):
    path = _rows(tmp, "s.csv", "a,b\n1,2\n3,4\n")
    return ["columns", f"csv:{path}?skip=100000000"]


# ---- numbers beyond float32: file, row, column, value; no numpy warning first -----------------------------------
@case("error: csv:TMP/big.csv: row 4, column 'a': expected a number within float32's range (magnitude at most "
      "3.403e+38), received '1e39'")
def float32_overflow_in_a_declared_column(tmp, models):
    _rows(tmp, "big.csv", _table("1e39"))
    return ["train", _spec(tmp, "big.csv", {"a": "numeric", "b": "numeric"}), "--out", tmp / "run"]


@case("error: csv:TMP/big.csv: row 4, column 'a': expected a number within float32's range (magnitude at most "
      "3.403e+38), received '-4e38'")
def float32_overflow_in_a_feature_column(tmp, models):
    _rows(tmp, "big.csv", _table("-4e38"))
    return ["train", _spec(tmp, "big.csv", None), "--out", tmp / "run"]


@case("error: TMP/x.csv: row 2, column 2 ('b'): expected a number within float32's range (magnitude at most "
      "3.403e+38), received '1e39'")
def float32_overflow_in_an_infer_csv(tmp, models):
    return ["infer", models[1], "--input", _rows(tmp, "x.csv", "a,b,c\n1,1e39,2\n")]


@case("error: input 'x': expected values within float32's range (magnitude at most 3.403e+38), received 1e+39 at "
      "example 0, feature 1")
def float32_overflow_in_infer_json(tmp, models):
    return ["infer", models[1], "--input", _rows(tmp, "x.json", "[[1, 1e39, 2]]")]


# ---- decimal commas ---------------------------------------------------------------------------------------------
@case("error: csv:TMP/dc.csv: row 4, column 'a': expected a number (the column is declared numeric), received "
      "'3,45' (a decimal comma? read the file with the csv: option ?decimal=, (e.g. 'csv:FILE?decimal=,'))")
def decimal_comma_in_a_declared_numeric_column(tmp, models):
    _rows(tmp, "dc.csv", _table("3,45", ";"))
    return ["train", _spec(tmp, "dc.csv", {"a": "numeric", "b": "numeric"}), "--out", tmp / "run"]


@case("error: csv:TMP/dc.csv: row 4, column 'a': expected a number, received '3,45' (a decimal comma? read the "
      "file with the csv: option ?decimal=, (e.g. 'csv:FILE?decimal=,'))")
def decimal_comma_in_a_feature_column(tmp, models):
    _rows(tmp, "dc.csv", _table("3,45", ";"))
    return ["train", _spec(tmp, "dc.csv", None), "--out", tmp / "run"]


@case("error: csv:TMP/c.csv?decimal=x: decimal: expected '.' or ',', received 'x' (the decimal mark of numbers: '.' "
      "or ',' ('3,45' reads as 3.45))")
def decimal_mark_of_another_character(tmp, models):
    path = _rows(tmp, "c.csv", "a,b\n1,2\n")
    return ["columns", f"csv:{path}?decimal=x"]


# ---- header cells -----------------------------------------------------------------------------------------------
@case("error: csv:TMP/h.csv: line 1, column 2: expected a column name, received a blank header cell (read as "
      "'column_2', which column 3 is named) (name column 2 in the header)")
def blank_header_cell(tmp, models):
    return ["columns", _rows(tmp, "h.csv", "a,,column_2,c\n1,2,3,x\n4,5,6,y\n")]


# ---- JSON records for a model with a fitted table: rows by column name ------------------------------------------
@case("error: TMP/r.json: row 2, column 'b': expected a number, text, true/false or null, received a list")
def json_record_with_a_list_cell(tmp, models):
    return ["infer", models[0], "--input", _rows(tmp, "r.json", '[{"a": 1, "b": "x"}, {"a": 2, "b": ["y", "z"]}]')]


@case("error: TMP/r.jsonl: row 3, column 'a': expected a number within float32's range (magnitude at most "
      "3.403e+38), received '1e+39'")
def json_lines_with_a_float32_overflow(tmp, models):
    return ["infer", models[0], "--input",
            _rows(tmp, "r.jsonl", '{"a": 1, "b": "x"}\n\n{"b": "y", "a": 1e39}\n')]


@case("error: TMP/r.json: column 'a': expected it in the keys of the file's records (the model reads columns a, b), "
      "received columns A, b (columns are matched by name, in any order)")
def json_records_without_a_column(tmp, models):
    return ["infer", models[0], "--input", _rows(tmp, "r.json", '[{"A": 1, "b": "x"}]')]


def _normal(text: str, tmp: Path) -> str:
    return text.replace(str(tmp), "TMP")


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_line_of_stderr_and_exit_code(name, tmp_path, models):
    fn, expected = CASES[name]
    r = CliRunner().invoke(main, [str(a) for a in fn(tmp_path, models)])
    first = _normal(r.stderr.splitlines()[0] if r.stderr else "", tmp_path)
    assert (r.exit_code, first) == (1, expected), r.output


def test_json_records_predict_as_the_same_rows_in_a_csv(tmp_path, models):
    """A list of objects and JSON lines (keys in any order, extra keys ignored, null a missing cell where the
    column allows it) give the predictions of the same rows written as a CSV."""
    tab = models[0]
    rows = [{"a": 0.25, "b": "x", "c": 1}, {"b": "z", "a": 3, "c": 0, "extra": [1]}, {"a": -1.5, "b": "y", "c": 1}]
    (tmp_path / "r.csv").write_text("c,b,a\n1,x,0.25\n0,z,3\n1,y,-1.5\n")
    (tmp_path / "r.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "extra"} for r in rows]))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "extra"})
                                                for r in rows) + "\n")
    outs = []
    for name, lines in (("r.csv", [2, 3, 4]), ("r.json", [1, 2, 3]), ("r.jsonl", [1, 2, 3])):
        r = CliRunner().invoke(main, ["infer", str(tab), "--input", str(tmp_path / name), "--json"])
        assert r.exit_code == 0, r.output
        result = json.loads(r.stdout)
        records = result["records"] if "records" in result else result
        assert [rec.pop("row") for rec in records] == lines  # each file's row as its messages count them
        outs.append(json.dumps(records, sort_keys=True))
    assert outs[0] == outs[1] == outs[2]
    assert re.search(r"scored against column 'c'", CliRunner().invoke(
        main, ["infer", str(tab), "--input", str(tmp_path / "r.json")]).output)


def test_records_of_the_model_inputs_read_by_input_name(tmp_path, models):
    """Records keyed by the model's input names (an encoded row, or a column input's [value]) read as before."""
    from archc.runtime.session import Model

    tab = models[0]
    inputs = list(Model.open(tab).inputs)
    if inputs == ["row"]:  # the model reads the encoded row: 1 numeric + 3 one-hot values
        records = [{"row": [0.1, 1, 0, 0]}, {"row": [-0.3, 0, 0, 1]}]
    else:  # one input per column, each example [value]
        records = [{"a": [0.5], "b": ["x"]}, {"a": [0.1], "b": ["z"]}]
    (tmp_path / "e.json").write_text(json.dumps(records))
    r = CliRunner().invoke(main, ["infer", str(tab), "--input", str(tmp_path / "e.json"), "--json"])
    assert r.exit_code == 0, r.output
