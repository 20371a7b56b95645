"""specs/penguins.toml, the README's tabular example, trains as shipped: `archc train` from another folder reads
specs/data/penguins.csv by column name (target first, text categories, NA cells) and records the fitted columns."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from archc.cli import main
from archc.data.arrays import split_rows
from archc.data.base import Splits
from archc.data.columns import is_missing
from archc.data.tabular import read_table

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "penguins.toml"
CSV = ROOT / "specs" / "data" / "penguins.csv"


def test_penguins_spec_trains_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["train", str(SPEC), "--epochs", "3", "--out", "run", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["test"]["examples"] == 69 and result["test"]["accuracy"] > 0.5
    assert result["labels"] == ["Adelie", "Chinstrap", "Gentoo"]
    table = json.loads((tmp_path / "run" / "export.json").read_text())["columns"]
    assert table["target"] == "species"
    assert [c["name"] for c in table["columns"]] == ["island", "bill_length_mm", "bill_depth_mm",
                                                     "flipper_length_mm", "body_mass_g", "sex", "year"]
    # The fill is the median of the training split's rows (the split archc.data cuts), not of the whole file.
    raw = read_table(CSV, "p")
    y = np.array([result["labels"].index(v) for v in raw.cells["species"]])
    train, _, _ = split_rows(len(y), y, "classification", Splits())
    cells = [raw.cells["bill_length_mm"][i] for i in train]
    bill = {c["name"]: c for c in table["columns"]}["bill_length_mm"]
    assert bill["fill"] == np.median([float(v) for v in cells if not is_missing(v)])
