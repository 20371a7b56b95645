"""Training a spec whose input is declared by columns, on a tiny CSV with a header: categories one-hot and
embedded, a numeric column with missing cells, a boolean, the target in the middle; the fitted columns recorded
as archc.columns (ONNX metadata and export.json), kept on --resume, reproduced by `archc export RUN_DIR`."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import archc.train as train
from archc.data import REGISTRY
from archc.data.columns import Table
from archc.errors import SpecError
from archc.train.api import export_run

# csv: reads declared columns once the tabular loader (issue 14, tabdata) is on this branch
pytestmark = pytest.mark.skipif("columns" not in REGISTRY["csv"].wants(), reason="csv: does not read columns yet")

COLUMNS = {
    "size": {"type": "numeric", "missing": "median", "indicator": True},
    "color": {"type": "categorical", "max_categories": 3},
    "city": {"type": "categorical", "categories": ["oslo", "rome", "lima", "pune"], "encode": "embedding", "dim": 2},
    "member": "boolean",
}


def make_csv(path: Path, n: int = 240, seed: int = 0, scale: float = 1.0) -> Path:
    """A learnable rule over every column kind; about one size cell in ten is missing (NA or empty)."""
    rng = np.random.default_rng(seed)
    colors, cities = ["red", "green", "blue"], ["oslo", "rome", "lima", "pune"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "size", "label", "color", "city", "member"])  # the target is not the last column
        for i in range(n):
            size, color, city, member = rng.normal(), rng.integers(3), rng.integers(4), rng.integers(2)
            score = size + 1.5 * (color == 0) - 1.5 * (color == 2) + (1.5 if city in (1, 3) else -1.5) + member
            missing = rng.random() < 0.1
            cell = ("NA" if i % 2 else "") if missing else f"{size * scale:.4f}"
            w.writerow([i, cell, "high" if score > 0 else "low", colors[color], cities[city],
                        ["yes", "no"][1 - member]])
    return path


def make_spec(path: Path, data: Path, **data_keys) -> Path:
    spec = {"archc": 1, "model": {"name": "tabular"}, "inputs": {"row": {"columns": COLUMNS}},
            "task": {"kind": "classification"},
            "layers": [{"op": "linear", "out_features": 16, "act": "relu"}, {"op": "linear", "out_features": 2}],
            "train": {"epochs": 12, "batch_size": 16, "optimizer": {"lr": 1e-2}},
            "data": {"source": f"csv:{data}", "target": "label", "val_fraction": 0.2, "test_fraction": 0.2}
            | data_keys}
    path.write_text(json.dumps(spec))
    return path


def columns_of(onnx_path: Path) -> dict:
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    return json.loads(props["archc.columns"])


@pytest.fixture
def trained(tmp_path):
    spec = make_spec(tmp_path / "tab.json", make_csv(tmp_path / "rows.csv"))
    result = train.run(spec, out=tmp_path / "run", quiet=True)
    return spec, result, tmp_path / "run"


def test_a_tabular_spec_trains_and_records_its_columns(trained):
    spec, result, run = trained
    assert result.test["accuracy"] >= 0.85, result.test
    recorded = columns_of(run / "model.onnx")
    assert recorded == json.loads((run / "export.json").read_text())["columns"]
    table = Table.from_json(recorded)
    assert table.names() == ["size", "color", "city", "member"] and table.input == "row"
    size, color, city, member = table.columns
    assert size.fill is not None and size.column.indicator and size.std > 0  # median of the train split, scaled
    assert set(color.categories) == {"red", "green", "blue"}   # learned from the training split
    assert city.categories == ("oslo", "rome", "lima", "pune")  # as listed
    assert member.column.type == "boolean" and table.width() == 2 + 3 + 1 + 1


def test_archc_export_reproduces_the_columns(trained, tmp_path):
    _, _, run = trained
    report = export_run(run, output=tmp_path / "again.onnx")
    assert columns_of(report.path) == columns_of(run / "model.onnx")


def test_resume_keeps_the_fitted_table(trained):
    """Resumed, the run encodes its data with the table it recorded, not one fitted again (here on a CSV whose
    sizes changed tenfold, which a new fit would scale differently)."""
    spec, _, run = trained
    before = columns_of(run / "model.onnx")
    make_csv(Path(json.loads(spec.read_text())["data"]["source"][4:]), scale=10.0)
    (run / "result.json").unlink()  # as if the final export had not happened
    train.run(spec, out=run, quiet=True, resume=True)
    assert columns_of(run / "model.onnx") == before
    fresh = train.run(spec, out=run.with_name("fresh"), quiet=True, epochs=1)
    assert Table.from_json(columns_of(Path(fresh.run_dir) / "model.onnx")).columns[0].std != \
        Table.from_json(before).columns[0].std


def test_normalize_with_columns_is_refused_before_training(tmp_path):
    spec = make_spec(tmp_path / "tab.json", make_csv(tmp_path / "rows.csv"), normalize=True)
    with pytest.raises(SpecError, match="data.normalize: expected no normalize with a tabular input"):
        train.run(spec, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()
