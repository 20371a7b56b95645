"""`archc infer` on a CSV for a model that takes a row (archc.export.tabular): columns by header name in any order,
extra columns ignored, the target column scored, a missing column and an unknown category refused with their
place; and the README's bare ONNX Runtime client, run as written. The model is a network trained here on the
shipped penguins CSV (Table.encode of the train rows), exported by archc with its fitted table."""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.data.columns import Column, fit
from archc.data.tabular import read_table

ROOT = Path(__file__).resolve().parents[2]
PENGUINS = ROOT / "specs" / "data" / "penguins.csv"
LABELS = ["Adelie", "Chinstrap", "Gentoo"]
COLUMNS = [Column("island", "categorical", categories=("Biscoe", "Dream", "Torgersen")),  # unknown = "error"
           Column("bill_length_mm", "numeric", missing="median", indicator=True),
           Column("bill_depth_mm", "numeric", missing="median"),
           Column("flipper_length_mm", "numeric", missing="mean"),
           Column("body_mass_g", "numeric", missing="mean"),
           Column("sex", "categorical", max_categories=2, missing="most_frequent", indicator=True,
                  unknown="most_frequent"),
           Column("year", "categorical", max_categories=3, encode="embedding", dim=2, unknown="ignore")]


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> Path:
    """penguins.onnx: a 2-layer network trained on the encoded rows (the table fitted on every row; what is checked
    here is the row interface, not generalization), exported by archc.export with its table and labels."""
    import torch

    from archc.export import export
    from archc.lower import lower
    from archc.pipeline import compile_spec

    raw = read_table(PENGUINS, "penguins.csv")
    table = fit("row", COLUMNS, raw.cells, target="species")
    x = torch.from_numpy(table.encode(raw.cells))
    y = torch.tensor([LABELS.index(s) for s in raw.cells["species"]])
    spec = {"archc": 1, "model": {"name": "penguins"}, "inputs": {"row": {"shape": [table.width()]}},
            "task": {"kind": "classification", "labels": LABELS},
            "layers": [{"op": "linear", "out_features": 16, "act": "relu"}, {"op": "linear", "out_features": 3}]}
    compiled = compile_spec(spec)
    module = lower(compiled.graph, seed=0)
    opt = torch.optim.Adam(module.parameters(), lr=0.03)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        opt.step()
    path = tmp_path_factory.mktemp("penguins") / "penguins.onnx"
    export(compiled, path, module=module, extra_metadata={"columns": table.to_json(), "labels": LABELS})
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def predictions(output: str) -> list[str]:
    return re.findall(r"\b(Adelie|Chinstrap|Gentoo)\b", output)


def test_infer_scores_the_training_csv_against_its_target_column(penguins):
    r = run("infer", penguins, "--input", PENGUINS, "--limit", "0")
    assert r.exit_code == 0, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith(f"{PENGUINS}, 344 rows, scored against column 'species': accuracy ")
    assert float(line.rsplit(" ", 1)[1]) > 0.95
    assert predictions(r.output)[:3] == ["Adelie", "Adelie", "Adelie"]
    named = run("infer", penguins, "--input", PENGUINS, "--limit", "0", "--target", "species")
    assert named.exit_code == 0 and named.output == r.output


def test_a_csv_source_is_the_split_training_scored(penguins):
    """`--input csv:FILE` reads the rows of --split (the recorded [data] fractions and seed, stratified by the
    target), as `archc infer` reads any data source; a plain FILE.csv is every row."""
    r = run("infer", penguins, "--input", f"csv:{PENGUINS}", "--limit", "0")
    assert r.exit_code == 0, r.output
    assert f"csv:{PENGUINS}, test split, 69 rows, scored against column 'species': accuracy " in r.output
    train = run("infer", penguins, "--input", f"csv:{PENGUINS}?target=species", "--split", "train", "--limit", "0")
    assert "train split, 241 rows" in train.output


def test_columns_in_any_order_with_extra_columns_and_no_target(penguins, tmp_path):
    """The same rows with the columns reversed, an extra column and no species: the same predictions, unscored."""
    raw = read_table(PENGUINS, "p")
    header = [c for c in reversed(raw.columns) if c != "species"] + ["note"]
    rows = [[raw.cells[c][i] if c != "note" else "x" for c in header] for i in range(len(raw))]
    shuffled = write_csv(tmp_path / "shuffled.csv", header, rows)
    a = run("infer", penguins, "--input", PENGUINS, "--limit", "0", "--json")
    b = run("infer", penguins, "--input", shuffled, "--limit", "0", "--json")
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    # the file with species also shows each row's true label (`true`); the predictions are the same
    assert [{k: v for k, v in rec.items() if k != "true"} for rec in json.loads(a.output)["records"]] == \
        json.loads(b.output)["records"]
    assert "true" in json.loads(a.output)["records"][0] and "true" not in json.loads(b.output)["records"][0]
    plain = run("infer", penguins, "--input", shuffled, "--limit", "3")
    assert "344 rows" in plain.output and "accuracy" not in plain.output


def test_missing_cells_are_imputed_in_the_graph(penguins, tmp_path):
    """Row 4 of the CSV is all NA but island and year: it runs (NaN into the numeric inputs), as Table.encode says."""
    r = run("infer", penguins, "--input", PENGUINS, "--limit", "5", "--json")
    assert r.exit_code == 0
    assert all(np.isfinite(rec["probability"]) for rec in json.loads(r.output)["records"][:5])


def test_each_prediction_carries_its_csv_row(penguins, tmp_path):
    """A CSV's records and a csv: source's split carry `row`, the file's line as messages count it (the header is
    line 1): the true label is the species on that line; the predicted class is `predicted_index`."""
    lines = PENGUINS.read_text().splitlines()
    species = lines[0].split(",").index("species")
    for given, n in ((PENGUINS, 344), (f"csv:{PENGUINS}", 69)):
        r = run("infer", penguins, "--input", given, "-o", tmp_path / "p.csv")
        assert r.exit_code == 0, r.output
        with open(tmp_path / "p.csv", newline="") as f:
            table = list(csv.DictReader(f))
        assert len(table) == n and list(table[0])[:2] == ["row", "true"] and "predicted_index" in table[0]
        assert all(lines[int(t["row"]) - 1].split(",")[species] == t["true"] for t in table)
        assert all(LABELS[int(t["predicted_index"])] == t["label"] for t in table)


def test_a_missing_column_is_named_with_what_the_file_has(penguins, tmp_path):
    raw = read_table(PENGUINS, "p")
    header = [c for c in raw.columns if c != "body_mass_g"]
    path = write_csv(tmp_path / "short.csv", header, [[raw.cells[c][i] for c in header] for i in range(3)])
    r = run("infer", penguins, "--input", path)
    assert r.exit_code == 1
    assert f"error: {path}: column 'body_mass_g': expected it in the file's header (the model reads columns " \
           "island, bill_length_mm, " in r.output
    assert "received columns species, island, bill_length_mm, bill_depth_mm, flipper_length_mm, sex, year" \
        in r.output


def test_an_unknown_category_under_unknown_error_is_refused_with_row_and_column(penguins, tmp_path):
    raw = read_table(PENGUINS, "p")
    rows = [[raw.cells[c][i] for c in raw.columns] for i in range(3)]
    rows[1][1] = "Atlantis"
    path = write_csv(tmp_path / "atlantis.csv", raw.columns, rows)
    r = run("infer", penguins, "--input", path)
    assert r.exit_code == 1
    assert "row 3, column 'island': expected one of the categories ['Biscoe', 'Dream', 'Torgersen'], received " \
           "'Atlantis'" in r.output
    rows[1][1], rows[1][7] = "Dream", "2031"  # year: unknown = "ignore", the reserved index
    ok = run("infer", penguins, "--input", write_csv(tmp_path / "future.csv", raw.columns, rows))
    assert ok.exit_code == 0, ok.output


def test_infer_on_a_csv_leaves_torch_unimported(penguins):
    probe = ("import sys\nfrom click.testing import CliRunner\nfrom archc.cli import main\n"
             f"r = CliRunner().invoke(main, ['infer', {str(penguins)!r}, '--input', {str(PENGUINS)!r}])\n"
             "assert r.exit_code == 0, r.output\nassert 'torch' not in sys.modules\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "ok", r.stdout + r.stderr


def readme_snippet() -> str:
    """The python block of README's "An ONNX that takes a row" subsection."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### An ONNX that takes a row"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_bare_onnxruntime_client_runs_as_written(penguins, monkeypatch):
    """The snippet (onnxruntime and numpy only) scores one penguin row by column name; same label as archc infer."""
    monkeypatch.chdir(penguins.parent)
    code = readme_snippet()
    assert "import archc" not in code and "from archc" not in code
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip().splitlines()[-1] == "Adelie"


def test_model_takes_nan_as_a_missing_number_but_refuses_inf(penguins):
    """Model.check: NaN in a numeric column input is a missing cell (imputed in the graph); inf is still refused."""
    from archc.errors import InputError
    from archc.runtime import Model
    from archc.runtime.tabular import feeds, table_of

    m = Model.open(penguins, device="cpu")
    table = table_of(m)
    cells = {c: ["NA"] if c != "island" and c != "year" else (["Dream"] if c == "island" else ["2008"])
             for c in table.names()}
    out = m.run(feeds(table, cells))
    assert np.isfinite(next(iter(out.values()))).all()
    bad = feeds(table, cells) | {"body_mass_g": np.array([[np.inf]], np.float32)}
    with pytest.raises(InputError, match="input 'body_mass_g': expected finite numbers, received 1 NaN or inf"):
        m.run(bad)


@pytest.mark.skipif("columns" not in __import__("archc.data").data.REGISTRY["csv"].wants(),
                    reason="csv: does not read columns yet")
def test_archc_train_on_a_tabular_spec_writes_a_model_that_takes_a_row(tmp_path):
    """The whole path: a spec declaring the penguins' columns trains, model.onnx takes one input per column, and
    `archc infer --input csv:FILE` scores its test split as training did."""
    import archc.train as train

    spec = tmp_path / "penguins.toml"
    spec.write_text(SPEC.replace("CSV", PENGUINS.as_posix()))
    result = train.run(spec, out=tmp_path / "run", quiet=True)
    model = tmp_path / "run" / "model.onnx"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [c.name for c in COLUMNS]
    r = run("infer", model, "--input", f"csv:{PENGUINS}", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metrics"]["accuracy"] == pytest.approx(result.test["accuracy"])


SPEC = """archc = 1
[model]
name = "penguins"
[inputs.row]
missing = "median"
[inputs.row.columns]
island = { type = "categorical", categories = ["Biscoe", "Dream", "Torgersen"] }
bill_length_mm = { type = "numeric", indicator = true }
bill_depth_mm = "numeric"
flipper_length_mm = { type = "numeric", missing = "mean" }
body_mass_g = { type = "numeric", missing = "mean" }
sex = { type = "categorical", max_categories = 2, missing = "most_frequent", indicator = true, unknown = "most_frequent" }
year = { type = "categorical", max_categories = 3, encode = "embedding", dim = 2, unknown = "ignore" }
[task]
kind = "classification"
[[layers]]
op = "linear"
out_features = 16
act = "relu"
[[layers]]
op = "linear"
out_features = 3
[train]
epochs = 10
batch_size = 32
optimizer = { name = "adamw", lr = 0.01 }
[data]
source = "csv:CSV"
target = "species"
"""
