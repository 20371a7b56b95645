"""Golden messages for issue 19's red team on data sources and inference inputs: inputs whose values, not their
syntax, are out of bounds (class labels too large to number), column-oriented records for a model that takes a
row. Each case: the exact first line of stderr and exit 1. Paths are written as TMP/...
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main

Case = Callable[..., list]
CASES: dict[str, tuple[Case, str]] = {}


def case(expected: str):
    def add(fn: Case) -> Case:
        CASES[fn.__name__] = (fn, expected)
        return fn
    return add


def _spec(tmp: Path, source: str) -> Path:
    """A 2-feature classifier trained for one epoch on `source`."""
    spec = {"archc": 1, "model": {"name": "t"}, "inputs": {"x": {"shape": [2]}}, "task": {"kind": "classification"},
            "layers": [{"op": "linear", "out_features": 2}], "train": {"epochs": 1, "batch_size": 4},
            "data": {"source": source}}
    (tmp / "s.json").write_text(json.dumps(spec))
    return tmp / "s.json"


# ---- bounded: a numbered class label is not a list length ----------------------------------------------------------
@case("error: npz:TMP/y.npz: expected class labels below 1,048,576 (a numbered label is its class's output "
      "position), received 1000000000000 (number the classes 0..K-1, or store the labels as text to name the classes)")
def npz_class_label_of_a_trillion(tmp):
    np.savez(tmp / "y.npz", x=np.zeros((20, 2), np.float32), y=np.array([0, 10**12] * 10))
    return ["train", _spec(tmp, f"npz:{tmp / 'y.npz'}"), "--out", tmp / "run"]


@case("error: npz:TMP/u.npz: expected class labels below 1,048,576 (a numbered label is its class's output "
      "position), received 18446744073709551615 (number the classes 0..K-1, or store the labels as text to name the "
      "classes)")
def npz_uint64_class_label_does_not_wrap(tmp):
    np.savez(tmp / "u.npz", x=np.zeros((20, 2), np.float32), y=np.array([0, 2**64 - 1] * 10, dtype=np.uint64))
    return ["train", _spec(tmp, f"npz:{tmp / 'u.npz'}"), "--out", tmp / "run"]


# ---- a folder named as a data file: said so, not "which does not exist" -------------------------------------------
@case("error: csv:TMP/d.csv: expected a CSV file, received 'TMP/d.csv', which is a folder")
def csv_source_that_is_a_folder(tmp):
    (tmp / "d.csv").mkdir()
    return ["columns", tmp / "d.csv"]


@case("error: npz:TMP/d.npz: expected an .npz file, received 'TMP/d.npz', which is a folder")
def npz_source_that_is_a_folder(tmp):
    (tmp / "d.npz").mkdir()
    return ["train", _spec(tmp, f"npz:{tmp / 'd.npz'}"), "--out", tmp / "run"]


def _idx(tmp: Path, dims: tuple[int, int, int], data: bytes) -> str:
    """idx:TMP/idx holding train images of header `dims` followed by `data`, and 10 labels (a folder of its own:
    the run folder may not be inside the data's)."""
    import struct

    (tmp / "idx").mkdir()
    (tmp / "idx" / "train-images-idx3-ubyte").write_bytes(struct.pack(">I3I", 0x803, *dims) + data)
    (tmp / "idx" / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 10) + bytes(10))
    return f"idx:{tmp / 'idx'}"


# ---- an IDX header's size in Python ints: no int64 wrap to a negative byte count, refused before reading -----------
@case("error: idx:TMP/idx: train-images-idx3-ubyte: expected 9,223,372,036,854,775,808 data bytes for shape "
      "[2147483648, 65536, 65536], received 16 (file truncated)")
def idx_header_declaring_2_to_the_63_bytes(tmp):
    return ["train", _spec(tmp, _idx(tmp, (2**31, 2**16, 2**16), bytes(16))), "--out", tmp / "run"]


@case("error: idx:TMP/idx: train-images-idx3-ubyte: expected 160 data bytes for shape [10, 4, 4], received more than 160 "
      "(file too long)")
def idx_file_longer_than_its_header(tmp):
    return ["train", _spec(tmp, _idx(tmp, (10, 4, 4), bytes(1000))), "--out", tmp / "run"]


# ---- one pair of parentheses around a hint -----------------------------------------------------------------------
@case("error: jsonl:TMP/r.jsonl: line 1: expected a field 'x', received fields ['features', 'label'] (the option "
      "?features=FIELD names it)")
def jsonl_without_the_features_field(tmp):
    (tmp / "r.jsonl").write_text('{"features": [1, 2], "label": 0}\n')
    return ["train", _spec(tmp, f"jsonl:{tmp / 'r.jsonl'}"), "--out", tmp / "run"]


# ---- jsonl: total (an integer of 5,000 digits was a ValueError, exit 3) and no key silently kept twice ------------
@case("error: jsonl:TMP/b.jsonl: line 1: expected JSON values archc can read, received one that fails (Exceeds the "
      "limit (4300 digits) for integer string conversion: value has 5000 digits; use sys.set_int_max_str_digits() "
      "to increase the limit)")
def jsonl_label_of_5000_digits(tmp):
    (tmp / "b.jsonl").write_text('{"x": [1, 2], "y": ' + "9" * 5000 + "}\n")
    return ["train", _spec(tmp, f"jsonl:{tmp / 'b.jsonl'}"), "--out", tmp / "run"]


@case("error: jsonl:TMP/d.jsonl: line 2: expected distinct keys in a JSON object, received 'y' twice")
def jsonl_source_with_a_duplicate_field(tmp):
    (tmp / "d.jsonl").write_text('{"x": [1, 2], "y": 0}\n{"x": [3, 4], "y": 1, "y": 0}\n')
    return ["train", _spec(tmp, f"jsonl:{tmp / 'd.jsonl'}"), "--out", tmp / "run"]


def _plain_model(tmp: Path) -> Path:
    """An untrained 3-feature, 2-class classifier that records no labels (scored by index)."""
    from archc.export import export
    from archc.lower import lower
    from archc.pipeline import compile_spec

    compiled = compile_spec({"archc": 1, "model": {"name": "p"}, "inputs": {"x": {"shape": [3]}},
                             "task": {"kind": "classification"}, "layers": [{"op": "linear", "out_features": 2}]})
    export(compiled, tmp / "p.onnx", module=lower(compiled.graph, seed=0))
    return tmp / "p.onnx"


def _five_classes(tmp: Path) -> str:
    np.savez(tmp / "d5.npz", x=np.zeros((40, 3), np.float32), y=np.arange(40) % 5)
    return f"npz:{tmp / 'd5.npz'}"


# ---- a class no output predicts: named, not an IndexError in the report or an accuracy that cannot be reached ------
@case("error: npz:TMP/d5.npz: expected at most 2 classes (the model's output has 2 scores and records no labels), "
      "received 5 in the data: '2', '3', '4' beyond them (score it on data of the model's classes only)")
def infer_report_with_more_classes_than_outputs(tmp):
    return ["infer", _plain_model(tmp), "--input", _five_classes(tmp), "--report", tmp / "rep"]


@case("error: npz:TMP/d5.npz: expected at most 2 classes (the model's output has 2 scores and records no labels), "
      "received 5 in the data: '2', '3', '4' beyond them (score it on data of the model's classes only)")
def quantize_scored_on_more_classes_than_outputs(tmp):
    return ["quantize", _plain_model(tmp), "--data", _five_classes(tmp), "--fp16", "-o", tmp / "p16.onnx"]


def _tab_model(tmp: Path) -> Path:
    """An untrained model that takes a row of columns a (numeric) and b (categorical x/y/z)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_golden_19_csv import _models

    return _models(tmp)[0]


# ---- an object of columns for a model that takes a row: its rows, not a shape message -------------------------------
@case("error: TMP/c.json: column 'b': expected 2 values (one per row, as column 'a' has), received 1")
def json_object_of_columns_of_different_lengths(tmp):
    (tmp / "c.json").write_text(json.dumps({"a": [1, 2], "b": ["x"]}))
    return ["infer", _tab_model(tmp), "--input", tmp / "c.json"]


@case("error: TMP/t.csv: --target 'zz': expected a column of the file to score against, received columns a, b, c "
      "(leave --target out to predict only)")
def infer_csv_target_named_but_absent(tmp):
    (tmp / "t.csv").write_text("a,b,c\n0.5,x,1\n1.5,y,0\n")
    return ["infer", _tab_model(tmp), "--input", tmp / "t.csv", "--target", "zz"]


# ---- a JSON key written twice: refused, not the last silently kept -------------------------------------------------
@case("error: TMP/d.json: expected distinct keys in a JSON object, received 'x' twice")
def infer_json_with_a_duplicate_input_key(tmp):
    (tmp / "d.json").write_text('{"x": [[1, 2, 3]], "x": [[4, 5, 6]]}')
    return ["infer", _plain_model(tmp), "--input", tmp / "d.json"]


@case("error: TMP/d.jsonl: line 2: expected distinct keys in a JSON object, received 'b' twice")
def infer_jsonl_record_with_a_duplicate_column(tmp):
    (tmp / "d.jsonl").write_text('{"a": 1, "b": "x"}\n{"b": "y", "a": 3, "b": "z"}\n')
    return ["infer", _tab_model(tmp), "--input", tmp / "d.jsonl"]


def _ids_model(tmp: Path) -> Path:
    """An untrained classifier of 3 int64 token ids (vocab 10)."""
    from archc.export import export
    from archc.lower import lower
    from archc.pipeline import compile_spec

    compiled = compile_spec({"archc": 1, "model": {"name": "e"},
                             "inputs": {"ids": {"shape": [3], "dtype": "int64", "vocab": 10}},
                             "task": {"kind": "classification"},
                             "layers": [{"op": "embedding", "num_embeddings": 10, "embedding_dim": 4},
                                        {"op": "flatten"}, {"op": "linear", "out_features": 2}]})
    export(compiled, tmp / "e.onnx", module=lower(compiled.graph, seed=0))
    return tmp / "e.onnx"


# ---- an integer input's CSV cell: named by row and column (was "refusing to cast floating-point values") ----------
@case("error: TMP/i.csv: row 2, column 3: expected a whole number within int64's range, without a fraction or "
      "exponent (the input 'ids' is int64), received '99999999999999999999'")
def infer_csv_id_beyond_int64(tmp):
    (tmp / "i.csv").write_text("1,2,3\n1,2,99999999999999999999\n")
    return ["infer", _ids_model(tmp), "--input", tmp / "i.csv"]


def test_json_object_of_columns_predicts_as_its_records(tmp_path):
    """{"b": [...], "a": [...]} (any key order, cells as in records) gives the predictions of the same rows as a list
    of records and as a CSV; on main it was refused with "input 'a': expected shape [batch, 1]"."""
    tab = _tab_model(tmp_path)
    (tmp_path / "r.csv").write_text("b,a\nx,0.25\nz,3\ny,-1.5\n")
    (tmp_path / "r.json").write_text(json.dumps([{"a": 0.25, "b": "x"}, {"a": 3, "b": "z"}, {"a": -1.5, "b": "y"}]))
    (tmp_path / "c.json").write_text(json.dumps({"b": ["x", "z", "y"], "a": [0.25, 3, -1.5]}))
    outs = []
    for name, lines in (("r.csv", [2, 3, 4]), ("r.json", [1, 2, 3]), ("c.json", [1, 2, 3])):
        r = CliRunner().invoke(main, ["infer", str(tab), "--input", str(tmp_path / name), "--json"])
        assert r.exit_code == 0, r.output
        records = json.loads(r.stdout)["records"]
        assert [rec.pop("row") for rec in records] == lines  # a CSV's line, a JSON record's number from 1
        outs.append(json.dumps(records, sort_keys=True))
    assert outs[0] == outs[1] == outs[2]
    assert len(json.loads(outs[0])) == 3


def test_numeric_class_cells_score_as_training_names_them(tmp_path):
    """Training names numeric classes canonically ('1.0', '+1' and '1e0' are class '1'); scoring a tabular model's
    CSV file names them the same way (on main, '1.0' was "a class the model never saw", so a run trained on such a
    column stopped at its final scoring)."""
    tab = _tab_model(tmp_path)
    (tmp_path / "p.csv").write_text("a,b,c\n0.5,x,1\n1.5,y,0\n2,z,1\n-1,x,0\n")
    (tmp_path / "w.csv").write_text("a,b,c\n0.5,x,1.0\n1.5,y,0.0\n2,z,+1\n-1,x,0e3\n")
    outs = []
    for name in ("p.csv", "w.csv"):
        r = CliRunner().invoke(main, ["infer", str(tab), "--input", str(tmp_path / name), "--json"])
        assert r.exit_code == 0, r.output
        result = json.loads(r.stdout)
        outs.append(([rec["true"] for rec in result["records"]], result["metrics"]))
    assert outs[0] == outs[1]
    assert outs[0][0] == ["1", "0", "1", "0"]


def test_columns_says_which_numeric_cells_training_refuses(tmp_path):
    """`archc columns` declares a column of numbers holding 'inf' or '1e39' numeric, as before, and says on stderr
    (and in the column's comment) which cell training will refuse; a clean column gets no note."""
    (tmp_path / "n.csv").write_text("a,b,c,d\n1,2,0.5,x\ninf,1e39,1.5,y\n3,4,2.5,x\n")
    r = CliRunner().invoke(main, ["columns", str(tmp_path / "n.csv")])
    assert r.exit_code == 0, r.output
    notes = _normal(r.stderr, tmp_path).splitlines()
    assert notes == [
        "note: csv:TMP/n.csv: column 'a' holds 'inf', not a finite number: training refuses it (clean those cells, "
        "or empty them for the column's missing rule)",
        "note: csv:TMP/n.csv: column 'b' holds '1e39', not a number within float32's range (magnitude at most "
        "3.403e+38): training refuses it (clean those cells, or empty them for the column's missing rule)"]
    assert "c = \"numeric\"  # 3 values\n" in r.stdout


def _featured_model(tmp: Path, names: tuple[str, str] = ("alpha", "beta")) -> Path:
    """An untrained 2-feature classifier recording the feature columns it was trained on (alpha, beta)."""
    from archc.export import export
    from archc.lower import lower
    from archc.pipeline import compile_spec

    compiled = compile_spec({"archc": 1, "model": {"name": "f"}, "inputs": {"x": {"shape": [2]}},
                             "task": {"kind": "classification"}, "layers": [{"op": "linear", "out_features": 2}]})
    export(compiled, tmp / "f.onnx", module=lower(compiled.graph, seed=0),
           extra_metadata={"features": list(names)})
    return tmp / "f.onnx"


# ---- a plain model trained on csv: columns reads an infer CSV's header by name -------------------------------------
@case("error: TMP/g.csv: column 'beta': expected the model's feature columns in the header (alpha, beta), missing "
      "beta (columns are matched by name, in any order; a file without a header is read by position)")
def infer_csv_header_without_a_feature_column(tmp):
    (tmp / "g.csv").write_text("alpha,gamma\n1,2\n")
    return ["infer", _featured_model(tmp), "--input", tmp / "g.csv"]


def test_infer_csv_columns_matched_by_header_name(tmp_path):
    """A header in another order (and with the target column) predicts as the training order; on main the cells
    were fed by position (beta as alpha: silently other predictions)."""
    model = _featured_model(tmp_path)
    rows = [(0.5, 7.0), (-2.0, 0.25), (3.0, -1.0)]
    (tmp_path / "same.csv").write_text("alpha,beta\n" + "".join(f"{a},{b}\n" for a, b in rows))
    (tmp_path / "rev.csv").write_text("beta,alpha\n" + "".join(f"{b},{a}\n" for a, b in rows))
    (tmp_path / "tgt.csv").write_text("label,beta,alpha\n" + "".join(f"1,{b},{a}\n" for a, b in rows))
    (tmp_path / "bare.csv").write_text("".join(f"{a},{b}\n" for a, b in rows))
    outs = []
    for name in ("same", "rev", "tgt", "bare"):
        r = CliRunner().invoke(main, ["infer", str(model), "--input", str(tmp_path / f"{name}.csv"),
                                      "-o", str(tmp_path / f"{name}.npy")])
        assert r.exit_code == 0, r.output
        outs.append(np.load(tmp_path / f"{name}.npy"))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_infer_csv_delimiter_and_numbered_header_read_as_training_reads_them(tmp_path):
    """A ';' file (no comma on its first line) reads as training's csv: reader does, and a header of numbers that
    names the recorded feature columns ('0', '1': pandas' defaults) is a header, not a row; on main the first was
    refused ("expected at least one data row") and the second predicted one example too many."""
    model = _featured_model(tmp_path, ("0", "1"))
    (tmp_path / "c.csv").write_text("0.5,7\n-2,0.25\n")
    (tmp_path / "s.csv").write_text("0.5;7\n-2;0.25\n")
    (tmp_path / "h.csv").write_text("1,0\n7,0.5\n0.25,-2\n")
    outs = []
    for name in ("c", "s", "h"):
        r = CliRunner().invoke(main, ["infer", str(model), "--input", str(tmp_path / f"{name}.csv"),
                                      "-o", str(tmp_path / f"{name}.npy")])
        assert r.exit_code == 0, r.output
        outs.append(np.load(tmp_path / f"{name}.npy"))
    assert outs[0].shape[0] == 2
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_training_on_csv_columns_records_them(tmp_path):
    """`archc train` on a csv: source of plain feature columns records them (archc.features) in model.onnx."""
    import onnx

    (tmp_path / "d.csv").write_text("beta,alpha,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    spec = {"archc": 1, "model": {"name": "t"}, "inputs": {"x": {"shape": [2]}}, "task": {"kind": "classification"},
            "layers": [{"op": "linear", "out_features": 2}], "train": {"epochs": 1, "batch_size": 8},
            "data": {"source": "csv:d.csv", "target": "label"}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    r = CliRunner().invoke(main, ["train", str(tmp_path / "s.json"), "--out", str(tmp_path / "run"), "-q",
                                  "--no-optimize", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "run" / "model.onnx")).metadata_props}
    assert json.loads(meta["archc.features"]) == ["beta", "alpha"]


def _normal(text: str, tmp: Path) -> str:
    return text.replace(str(tmp), "TMP")


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_line_of_stderr_and_exit_code(name, tmp_path):
    fn, expected = CASES[name]
    r = CliRunner().invoke(main, [str(a) for a in fn(tmp_path)])
    first = _normal(r.stderr.splitlines()[0] if r.stderr else "", tmp_path)
    assert (r.exit_code, first) == (1, expected), r.output
