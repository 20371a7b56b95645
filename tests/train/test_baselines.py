"""Tabular runs report scikit-learn's HistGradientBoosting and the trivial predictor (majority class / mean) on the
same test split (archc.train.baselines): in result.json, report.json and the closing lines, with a warning when
archc's score is behind the gradient boosting's. Real data: specs/data/penguins.csv (csv: and parquet:, declared
columns) and scikit-learn's bundled diabetes table written as a CSV (regression, no declared columns)."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import archc.train.baselines as baselines
from archc.cli import main
from archc.data.dataset import Split

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "penguins.toml"
CSV = ROOT / "specs" / "data" / "penguins.csv"
BEHIND = "archc is behind the gradient-boosting baseline"


def train(*args: str):
    r = CliRunner().invoke(main, ["train", *args, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return r.output


def test_penguins_csv_bad_recipe_is_behind(tmp_path):
    """A deliberately bad recipe (1 epoch at a tiny lr) is told it trails the gradient boosting, with hints."""
    out = train(str(SPEC), "--epochs", "1", "--lr", "1e-6", "--out", str(tmp_path / "run"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    b = result["baselines"]
    assert b["metric"] == "accuracy" and b["model"] == "HistGradientBoostingClassifier"
    assert b["gradient_boosting"] > 0.9 and b["seconds"] > 0
    # the majority class of the training split, scored on the test split: Adelie, under half of the penguins
    assert 0.3 < b["trivial"] < 0.5 and b["trivial_rule"] == "majority class"
    assert b["behind"] is True and result["test"]["accuracy"] < b["gradient_boosting"] - baselines.MARGIN["accuracy"]
    assert BEHIND in out and "more epochs" in out and "use the gradient-boosting model" in out
    assert f"gradient boosting {b['gradient_boosting']:.4f}" in out.splitlines()[-1]  # the last line
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["baselines"] == b


def test_parquet_source_with_declared_columns(tmp_path):
    """The same table as parquet: the same rows, so the same baselines as the CSV."""
    pq.write_table(pacsv.read_csv(CSV, convert_options=pacsv.ConvertOptions(null_values=["NA"])),
                   tmp_path / "penguins.parquet")
    train(str(SPEC), "--data", f"parquet:{tmp_path / 'penguins.parquet'}", "--epochs", "1", "--quiet",
          "--out", str(tmp_path / "run"))
    b = json.loads((tmp_path / "run" / "result.json").read_text())["baselines"]
    assert b["gradient_boosting"] > 0.9 and 0.3 < b["trivial"] < 0.5


def test_a_good_recipe_is_not_behind(tmp_path, h):
    """Labels from a linear rule over 16 features: a small MLP learns it, the trees do not beat it."""

    data = h.make_npz(tmp_path / "d.npz", n=400)
    spec = h.make_spec(tmp_path / "s.json", data, train={"epochs": 8, "optimizer": {"name": "adamw", "lr": 1e-2}})
    out = train(str(spec), "--out", str(tmp_path / "run"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    b = result["baselines"]
    assert b["gradient_boosting"] is not None and b["behind"] is False
    assert result["test"]["accuracy"] >= b["gradient_boosting"] - baselines.MARGIN["accuracy"]
    assert "baselines on the same test split" in out and BEHIND not in out


def test_regression_on_diabetes_csv(tmp_path):
    """scikit-learn's bundled diabetes table (442 rows, raw units) as a CSV: MAE baselines in the target's units."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    path = tmp_path / "diabetes.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*d.feature_names, "progression"])
        w.writerows([*row, t] for row, t in zip(d.data.tolist(), d.target.tolist()))
    spec = {"archc": 1, "model": {"name": "diabetes"}, "inputs": {"x": {"shape": [10]}},
            "task": {"kind": "regression"},
            "layers": [{"op": "linear", "out_features": 16, "act": "relu"}, {"op": "linear", "out_features": 1}],
            "train": {"epochs": 2, "batch_size": 32},
            "data": {"source": f"csv:{path}", "target": "progression", "normalize": True}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    train(str(tmp_path / "s.json"), "--quiet", "--out", str(tmp_path / "run"))
    b = json.loads((tmp_path / "run" / "result.json").read_text())["baselines"]
    assert b["metric"] == "mae" and b["trivial_rule"] == "mean target"
    # the mean predictor's MAE on diabetes is ~60-70; gradient boosting's ~45-50
    assert 50 < b["trivial"] < 80 and 30 < b["gradient_boosting"] < b["trivial"]


def split(n: int, features: int = 3, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.standard_normal((n, features)).astype(np.float32), rng.integers(0, 2, n))


def test_cost_bound_and_missing_sklearn_leave_the_trivial_baseline(monkeypatch):
    monkeypatch.setattr(baselines, "MAX_ROWS", 50)
    b = baselines.tabular("classification", split(60), split(20, seed=1))
    assert b["gradient_boosting"] is None and "60 training rows, above 50" in b["note"]
    y, yt = split(60).y, split(20, seed=1).y
    assert b["trivial"] == np.mean(yt == np.bincount(y).argmax())
    monkeypatch.setattr(baselines, "MAX_ROWS", 200_000)
    # scikit-learn's digits: 10 classes, one tree each per iteration: over the estimated-time bound, not fitted
    digits = Split(np.zeros((1437, 64), np.float32), np.arange(1437) % 10)
    b = baselines.tabular("classification", digits, digits)
    assert b["gradient_boosting"] is None and "x 10 classes would take about" in b["note"] and b["trivial"] > 0
    monkeypatch.setitem(sys.modules, "sklearn.ensemble", None)  # import fails as when scikit-learn is absent
    b = baselines.tabular("classification", split(60), split(20, seed=1))
    assert b["gradient_boosting"] is None and "scikit-learn is not installed" in b["note"]
    lines = baselines.lines(b, {"accuracy": 0.0}, True)
    assert len(lines) == 1 and "majority class" in lines[0]  # no gradient boosting: nothing to be behind


def test_only_feature_rows_of_classification_or_regression():
    images = Split(np.zeros((10, 1, 4, 4), np.float32), np.zeros(10, np.int64))
    ids = Split(np.zeros((10, 8), np.int64), np.zeros(10, np.int64))
    assert baselines.tabular("classification", images, images) is None
    assert baselines.tabular("classification", ids, ids) is None
    assert baselines.tabular("multilabel", split(10), split(10)) is None
    assert baselines.tabular("classification", split(10), split(0)) is None


def test_behind_is_a_margin_past_the_gradient_boosting():
    acc = {"metric": "accuracy", "gradient_boosting": 0.90, "trivial": 0.5, "trivial_rule": "majority class",
           "model": "m", "fit_on": "", "seconds": 0.1, "note": ""}
    assert not baselines.behind(acc, {"accuracy": 0.89}) and baselines.behind(acc, {"accuracy": 0.87})
    mae = acc | {"metric": "mae", "gradient_boosting": 40.0, "trivial": 60.0, "trivial_rule": "mean target"}
    assert not baselines.behind(mae, {"mae": 41.0}) and baselines.behind(mae, {"mae": 43.0})  # 5% of 40 is 2
    hints = baselines.lines(mae, {"mae": 43.0}, normalized=False)[-1]
    assert "behind" in hints and "[data] normalize = true" in hints
    assert baselines.verdict(mae, {}) is None and baselines.verdict(mae, {"mae": 43.0})["behind"] is True
