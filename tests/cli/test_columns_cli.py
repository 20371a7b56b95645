"""`archc columns FILE.csv`: the printed table parses as TOML, declares what was inferred, and loads the file;
`--target` on `archc train` and `archc infer`."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from archc.cli import main
from archc.data import load
from archc.data.columns import Column, Request
from archc.data.survey import survey
from archc.data.tabular import read_table

ROOT = Path(__file__).resolve().parents[2]
PENGUINS = ROOT / "specs" / "data" / "penguins.csv"


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def declared(text: str, input_name: str = "row") -> tuple[Column, ...]:
    """The columns of the printed table, read back from its TOML as a spec reader would."""
    table = tomllib.loads(text)["inputs"][input_name]["columns"]
    out = []
    for name, value in table.items():
        if isinstance(value, str):
            out.append(Column(name, value))
        else:
            fields = dict(value)
            if "categories" in fields:
                fields["categories"] = tuple(fields["categories"])
            out.append(Column(name, **fields))
    return tuple(out)


def test_penguins_round_trip():
    r = run("columns", PENGUINS, "--target", "species")
    assert r.exit_code == 0, r.output
    cols = declared(r.output)
    raw = read_table(PENGUINS, "p")
    assert cols == tuple(s.column for s in survey(raw, "species") if s.column is not None)
    by = {c.name: c for c in cols}
    assert "species" not in by and list(by) == ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm",
                                                "body_mass_g", "sex", "year"]
    assert by["island"] == Column("island", "categorical", categories=("Biscoe", "Dream", "Torgersen"))
    assert by["sex"] == Column("sex", "categorical", categories=("male", "female"), missing="most_frequent")
    assert by["bill_length_mm"] == Column("bill_length_mm", "numeric", missing="median")
    assert by["year"] == Column("year", "numeric")
    assert "# 2 values, 11 missing" in r.output and "could be { type = \"categorical\"" in r.output
    assert "# target 'species': classification, 3 classes: Adelie, Chinstrap, Gentoo" in r.output
    assert all(not c.problems() for c in cols)
    # What it printed loads the file as it is.
    ds = load(f"csv:{PENGUINS}", target="species", columns=Request("row", cols))
    assert ds.example_shape == (3 + 4 + 2 + 1,) and not np.isnan(ds.train.x).any()


def test_every_type(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    rows = []
    for i in range(n):
        rows.append([f"{rng.normal():.3f}" if i % 7 else "",        # numeric with missing cells
                     ["yes", "no"][i % 2] if i % 11 else "NA",      # boolean with a missing cell
                     ["red", "green", "blue"][i % 3],                # categorical, listed
                     f"city_{i % 25}",                               # categorical, more than --max-categories
                     f"id-{i}",                                      # an identifier: left out
                     str(i % 4),                                     # few integers: numeric, could be categorical
                     "",                                             # every cell missing: left out
                     ["a", "b"][i % 2]])                             # the target
    path = tmp_path / "all kinds.csv"
    path.write_text("x,flag,colour,city,id,level,empty,label\n" + "\n".join(",".join(r) for r in rows) + "\n")
    r = run("columns", path, "--max-categories", "10", "--input", "my_row")
    assert r.exit_code == 0, r.output
    cols = {c.name: c for c in declared(r.output, "my_row")}
    assert cols["x"] == Column("x", "numeric", missing="median")
    assert cols["flag"] == Column("flag", "boolean", missing="most_frequent")
    assert cols["colour"] == Column("colour", "categorical", categories=("blue", "green", "red"))
    assert cols["city"] == Column("city", "categorical", max_categories=25, unknown="ignore")
    assert cols["level"] == Column("level", "numeric")
    assert set(cols) == {"x", "flag", "colour", "city", "level"}
    assert "# id: 60 values, one per row (an identifier?): left out" in r.output
    assert "# empty: every cell is missing: left out" in r.output
    ds = load(f"csv:{path}", columns=Request("row", tuple(cols.values())))
    assert ds.classes == ["a", "b"] and ds.example_shape == (1 + 1 + 3 + 25 + 1,)


def test_sklearn_file_and_dialect_options(tmp_path):
    import sklearn

    iris = Path(sklearn.__file__).parent / "datasets" / "data" / "iris.csv"
    r = run("columns", iris)
    assert r.exit_code == 0, r.output
    assert [c.name for c in declared(r.output)] == ["column_1", "column_2", "column_3", "column_4"]
    assert "scikit-learn's layout" in r.output and "3 classes: setosa, versicolor, virginica" in r.output
    path = tmp_path / "semi.csv"
    path.write_text("# notes\na;b;y\n1,5;x;0\n2,5;y;1\n")
    r = run("columns", f"csv:{path}?skip=1")
    assert r.exit_code == 0, r.output
    # '1,5' in a ';' file is a number with a decimal comma: left out with a note, not read as two categories
    assert declared(r.stdout) == (Column("b", "categorical", categories=("x", "y")),)
    assert r.stderr == (f"note: csv:{path}?skip=1: column 'a' holds numbers with a decimal comma ('1,5'), left "
                        f"out: if the comma is the decimal mark, read them as numbers with "
                        f"'csv:{path}?skip=1&decimal=,'\n")
    r = run("columns", f"csv:{path}?skip=1&decimal=,")
    assert r.exit_code == 0 and not r.stderr, r.output
    assert declared(r.stdout) == (Column("a", "numeric"), Column("b", "categorical", categories=("x", "y")))
    assert f'# source = "csv:{path}?skip=1&decimal=,"' in r.stdout


def test_errors_are_one_line_exit_1(tmp_path):
    r = run("columns", PENGUINS, "--target", "specie")
    assert r.exit_code == 1 and "expected target column 'specie'" in r.output and "did you mean 'species'" in r.output
    r = run("columns", tmp_path / "nope.csv")
    assert r.exit_code == 1 and "does not exist" in r.output
    r = run("columns", "sklearn:iris")
    assert r.exit_code == 2


def spec(path: Path, source: str, width: int) -> Path:
    path.write_text(json.dumps({
        "archc": 1, "model": {"name": "t"}, "inputs": {"x": {"shape": [width]}}, "task": {"kind": "classification"},
        "layers": [{"op": "linear", "out_features": 8, "act": "relu"}, {"op": "linear", "out_features": 2}],
        "train": {"epochs": 2, "batch_size": 16}, "data": {"source": source, "normalize": True}}))
    return path


def test_target_flags_of_train_and_infer(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((80, 3))
    kind = np.where(x[:, 0] > 0, "up", "down")
    data = tmp_path / "d.csv"
    data.write_text("kind,a,b,c\n" + "\n".join(f"{k},{r[0]:.3f},{r[1]:.3f},{r[2]:.3f}" for k, r in zip(kind, x)) + "\n")
    s = spec(tmp_path / "s.json", f"csv:{data}", 3)
    r = run("train", s, "--out", tmp_path / "no", "--quiet", "--device", "cpu")
    assert r.exit_code == 1 and "--target kind" in r.output  # the last column, 'c', is taken as the target
    r = run("train", s, "--target", "kind", "--out", tmp_path / "run", "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    model = tmp_path / "run" / "model.onnx"
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(data.read_text().replace("kind,", "label,", 1))
    r = run("infer", model, "--input", f"csv:{renamed}", "--json", "--device", "cpu")
    assert r.exit_code == 1 and "expected target column 'kind'" in r.output
    r = run("infer", model, "--input", f"csv:{renamed}", "--target", "label", "--json", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "accuracy" in json.loads(r.output)["metrics"]
    r = run("infer", model, "--input", data, "--target", "label")
    assert r.exit_code == 2 and "--target names the target column of a data source" in r.output
