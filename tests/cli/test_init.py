"""`archc init SOURCE`: a table (generated, with text columns, gaps, an id and a date; and penguins.csv), an image
folder and a text file each go from `archc init` through `archc validate` to `archc train` with no edits; identifiers
and dates are left out with a comment; an existing file is never written over."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.data.survey import survey_column

ROOT = Path(__file__).resolve().parents[2]
PENGUINS = ROOT / "specs" / "data" / "penguins.csv"


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def init_validate_train(tmp_path: Path, *args: object, spec: str = "spec.toml") -> dict:
    """init, validate and a one-epoch train of the spec as written; the spec read back."""
    r = run("init", *args)
    assert r.exit_code == 0, r.output
    assert f"wrote {spec}" in r.output
    r = run("validate", spec)
    assert r.exit_code == 0, r.output
    r = run("train", spec, "--epochs", "1", "--out", tmp_path / "run", "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "model.onnx").stat().st_size > 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["test"]["examples"] > 0 and result["metric"] in result["test"]  # scored on its test split
    text = Path(spec).read_text()
    assert str(tmp_path) not in text  # the data path is written relative to the spec
    return tomllib.loads(text) | {"_text": text}


def cars(path: Path, n: int = 120) -> None:
    """A table as users have them: an id, dates, text categories, gaps, free text and a numeric target."""
    rng = np.random.default_rng(0)
    lines = ["car_id,bought,make,weight,colour,notes,price"]
    for i in range(n):
        w = rng.normal(1500, 300)
        lines.append(",".join([str(1000 + i), f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}",
                               ["ford", "fiat", "audi"][i % 3], f"{w:.1f}" if i % 9 else "", ["red", "", "blue"][i % 3], f"car number {i}",
                               f"{w * 10 + rng.normal(0, 100):.2f}"]))
    path.write_text("\n".join(lines) + "\n")


def test_table_leaves_out_ids_and_dates_and_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cars(tmp_path / "cars.csv")
    spec = init_validate_train(tmp_path, "cars.csv")
    assert spec["task"]["kind"] == "regression" and spec["data"] == {
        "source": "csv:cars.csv", "target": "price", "val_fraction": spec["data"]["val_fraction"],
        "test_fraction": 0.2}
    assert set(spec["inputs"]["row"]["columns"]) == {"make", "weight", "colour"}
    text = spec["_text"]
    assert "# car_id: 120 values: integers nearly one per row (an identifier?): left out" in text
    assert "# bought: 84 values: dates such as '2021-01-01': left out" in text
    assert "# notes: 120 values, one per row (an identifier?): left out" in text
    assert spec["layers"][-1]["out_features"] == 1
    assert spec["train"]["early_stopping"] > 0  # small data: early stopping on a larger validation share


def test_penguins_with_a_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = init_validate_train(tmp_path, PENGUINS, "--target", "species", "-o", "penguins.toml", spec="penguins.toml")
    assert spec["task"]["kind"] == "classification" and spec["layers"][-1]["out_features"] == 3
    assert spec["data"]["target"] == "species" and spec["data"]["source"].endswith("specs/data/penguins.csv")
    assert "year" in spec["inputs"]["row"]["columns"] and "species" not in spec["inputs"]["row"]["columns"]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["epochs_run"] == 1 and result["labels"] == ["Adelie", "Chinstrap", "Gentoo"]


def test_image_folder(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    for k, name in enumerate(("cats", "dogs")):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.full((16, 16, 3), 60 + 120 * k, np.uint8) + rng.integers(0, 40, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pets" / name / f"{i}.png")
    spec = init_validate_train(tmp_path, "images:pets")
    assert spec["inputs"]["image"]["shape"] == [3, 16, 16]
    assert spec["task"] == {"kind": "classification", "labels": ["cats", "dogs"]}
    assert [layer["op"] for layer in spec["layers"]].count("conv2d") == 3  # 16 -> 8 -> 4 -> 2
    assert spec["data"]["source"] == "images:pets"


def test_text_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(40))
    (tmp_path / "notes.txt").write_text(text)
    spec = init_validate_train(tmp_path, "text:notes.txt")
    assert spec["task"]["kind"] == "language_model" and spec["data"]["source"] == "text:notes.txt"
    context = spec["axes"]["seq"]
    assert 8 <= context <= 128 and round(len(text) * 0.1) >= context + 1  # every split holds a window
    assert (tmp_path / "run" / "model.kv.onnx").exists()


def test_parquet_with_a_date_type(tmp_path, monkeypatch):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.chdir(tmp_path)
    n = 60
    pq.write_table(pa.table({"uid": list(range(n)), "day": [datetime.date(2021, 1, 1 + i % 28) for i in range(n)],
                             "x": [float(i % 7) if i % 5 else None for i in range(n)],
                             "kind": [["a", "b", "c"][i % 3] for i in range(n)], "y": [i % 2 for i in range(n)]}),
                   tmp_path / "t.parquet")
    spec = init_validate_train(tmp_path, "t.parquet")
    assert spec["data"]["source"] == "parquet:t.parquet" and set(spec["inputs"]["row"]["columns"]) == {"x", "kind"}
    assert "# day: Arrow type date32[day]: left out" in spec["_text"] and "# uid: 60 values" in spec["_text"]


def test_never_writes_over_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cars(tmp_path / "cars.csv")
    Path("spec.toml").write_text("mine\n")
    r = run("init", "cars.csv")
    assert r.exit_code == 1 and "spec.toml" in r.output and "--force" in r.output
    assert Path("spec.toml").read_text() == "mine\n"
    for n in (1, 2):
        r = run("init", "cars.csv", "--force")
        assert r.exit_code == 0, r.output
        assert Path(f"spec.toml.old-{n}").exists() and "archc = 1" in Path("spec.toml").read_text()
    assert Path("spec.toml.old-1").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cars.csv", "spec.toml", "spec.toml.old-1",
                                                          "spec.toml.old-2"]  # no temporary left


def test_stdout_and_bad_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cars(tmp_path / "cars.csv")
    r = run("init", "cars.csv", "-o", "-", "--task", "classification", "--target", "make")
    assert r.exit_code == 0 and tomllib.loads(r.output)["task"]["kind"] == "classification"
    assert not Path("spec.toml").exists()
    (tmp_path / "one" / "only").mkdir(parents=True)
    (tmp_path / "tiny.txt").write_text("tiny")
    for args, words in [(["nosuch.csv"], "does not exist"), (["images:one"], "at least 2 class sub-folders"),
                        (["cars.csv", "--target", "prise"], "did you mean 'price'"),
                        (["images:one", "--target", "x"], "--target only for a table"),
                        (["idx:one"], "expected a source of csv:"),
                        (["cars.csv", "-o", "cars.csv", "--force"], "none of the command's inputs"),
                        (["images:one?channels=x"], "channels: expected a whole number"),
                        (["text:tiny.txt?max_bytes=zz"], "max_bytes: expected a whole number"),
                        (["tiny.txt"], "expected text enough for a window of 9 bytes")]:
        r = run("init", *args)
        assert r.exit_code == 1 and words in r.output and "Traceback" not in r.output, (args, r.output)


def test_a_starter_that_does_not_validate_is_a_bug(tmp_path, monkeypatch):
    import archc.starter

    monkeypatch.chdir(tmp_path)
    cars(tmp_path / "cars.csv")
    monkeypatch.setattr(archc.starter, "starter", lambda *a, **k: archc.starter.Starter("archc = 1\n", "broken"))
    r = run("init", "cars.csv")
    assert r.exit_code == 3 and "does not validate" in r.output and not Path("spec.toml").exists()


@pytest.mark.parametrize("name, cells, left_out", [
    ("when", ["2021-03-04", "2021-03-05T10:20", "2020/01/02", ""], True),                  # ISO-like dates
    ("when", ["2021-03-04", "yesterday", "2021-03-05", "2021-03-05"], False),              # not every cell a date
    ("row", [str(i) for i in range(50)], True),                                             # 0, 1, 2, ...: row ids
    ("user_id", [str(i * 37) for i in range(50)], True),                                     # spread, id-like name
    ("mass_g", [str(i * 37) for i in range(50)], False),                                     # spread measurements
    ("mass_g", [f"{i * 3.7:.1f}" for i in range(50)], False),                               # not integers
    ("name", [f"n{i}" for i in range(30)] + [f"n{i}" for i in range(10)], True),            # mostly unique text
    ("city", [f"c{i % 15}" for i in range(40)], False),                                     # learnable categories
])
def test_survey_identifiers_and_dates(name, cells, left_out):
    s = survey_column(name, cells, max_categories=10)
    assert (s.column is None) == left_out, s.note


def test_readme_documents_every_flag():
    section = (ROOT / "README.md").read_text().split("### Quick start on your own data", 1)[1].split("\n## ", 1)[0]
    for p in main.commands["init"].params:
        if p.name != "debug" and not p.name == "source":
            assert any(f"`{o}" in section for o in p.opts), p.opts
