"""A run that ends with its model: a tabular spec whose numeric columns have large means (a year around 2008, a
body mass around 4200, as in the penguins data) trains to high confidence and exports a model that takes a row,
whose parity check against Table.encode + the core passes (the encoded rows are identical: float64 in the graph as
in the reference). The check before training runs that same export (row front, target restore) on trained-size
weights, so a spec whose export would fail stops before its first epoch, with no run folder."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import archc.export as export_pkg
import archc.export.tabular as tabular
from archc.cli import main
from archc.errors import ExportError
from archc.export.restore import KEY as TARGET_SCALE
from archc.lower import lower
from archc.train import run
from archc.train.api import export_run
from archc.train.export_check import TRAINED_SCALE

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]


def make_csv(path: Path, n: int = 300, seed: int = 0, missing: bool = True) -> Path:
    """Gentoo are heavy (~5000 g); of the light ones (~3700 g), Adelie were seen in 2007, Chinstrap in 2009: the
    year (std ~0.8 around 2008) and the mass decide the class. A few cells are NA."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["species", "island", "body_mass_g", "year"])
        for i in range(n):
            k = i % 3
            mass = rng.normal(5000 if k == 2 else 3700, 150)
            year = [2007, 2009, int(rng.integers(2007, 2010))][k]
            w.writerow([SPECIES[k], ["Biscoe", "Dream"][i % 2], "NA" if missing and i % 37 == 5 else f"{mass:.0f}",
                        year])
    return path


def make_spec(tmp_path: Path, kind: str = "classification", epochs: int = 12) -> dict:
    columns = {"island": {"type": "categorical", "max_categories": 3},
               "body_mass_g": {"type": "numeric", "missing": "median"}, "year": "numeric"}
    out = 3 if kind == "classification" else 1
    if kind != "classification":  # the mass is the target: not a feature column
        del columns["body_mass_g"]
    return {"archc": 1, "model": {"name": "large_means"}, "inputs": {"row": {"columns": columns}},
            "task": {"kind": kind},
            "layers": [{"op": "linear", "out_features": 32, "act": "relu"},
                       {"id": "logits", "op": "linear", "out_features": out}],
            "train": {"epochs": epochs, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 1e-2}},
            "data": {"source": f"csv:{make_csv(tmp_path / 'penguins.csv', missing=kind == 'classification')}",
                     "target": "species" if kind == "classification" else "body_mass_g",
                     "val_fraction": 0.2, "test_fraction": 0.2}}


def test_large_mean_columns_train_to_high_confidence_and_export(tmp_path):
    result = run(make_spec(tmp_path), out=tmp_path / "run", quiet=True, device="cpu")
    assert result.test["accuracy"] >= 0.9  # the rows whose mass is NA (imputed) are the only hard ones
    row = json.loads((tmp_path / "run" / "export.json").read_text())["columns"]
    means = {c["name"]: c["mean"] for c in row["columns"]}
    assert means["year"] > 2007 and means["body_mass_g"] > 4000  # the columns this is about
    sess = ort.InferenceSession(result.paths["onnx"], providers=["CPUExecutionProvider"])
    feeds = {"island": np.array([["Dream"], ["Biscoe"], ["Dream"]], object),
             "body_mass_g": np.array([[3650.0], [3720.0], [5010.0]]), "year": np.array([[2007.0], [2009.0], [2008.0]])}
    (logits,) = sess.run(None, feeds)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert p.argmax(1).tolist() == [0, 1, 2] and p.max(1).min() > 0.9  # confident, and right
    # `archc export RUN_DIR` of the same run passes the same parity check again
    report = export_run(tmp_path / "run", output=tmp_path / "again.onnx")
    assert report.row["max_abs_diff"] == 0.0 and report.row["columns"] == ["island", "body_mass_g", "year"]


def test_the_check_before_training_runs_the_final_export_on_trained_size_weights(tmp_path, monkeypatch):
    """The data's metadata (fitted table, target scale) reach the check's export, and its weights are the seed's
    scaled by TRAINED_SCALE; a failure there is a failure before the run folder exists."""
    spec = make_spec(tmp_path, "regression", epochs=1)
    seen = {}

    def capture(compiled, path, module=None, extra_metadata=None, **kwargs):
        seen["extra"], seen["state"] = extra_metadata, {k: v.clone() for k, v in module.state_dict().items()}
        raise ExportError("stop here")

    monkeypatch.setattr(export_pkg, "export", capture)
    with pytest.raises(ExportError, match="stop here") as info:
        run(spec, out=tmp_path / "run", quiet=True, device="cpu")
    assert "found by exporting the model before training" in info.value.hint
    assert not (tmp_path / "run").exists()
    assert "columns" in seen["extra"] and set(seen["extra"][TARGET_SCALE]) == {"logits"}
    from archc.pipeline import compile_spec

    initial = lower(compile_spec(spec).graph, seed=0).state_dict()
    for name, value in seen["state"].items():
        factor = TRAINED_SCALE if value.ndim >= 2 else 1.0
        assert torch.equal(value, initial[name] * factor), name


def test_a_row_front_that_would_fail_at_the_end_fails_before_epoch_one(tmp_path, monkeypatch):
    """The row front's own parity check runs before training (here made to fail: no tolerance at all)."""
    monkeypatch.setattr(tabular, "ATOL", -1.0)
    with pytest.raises(ExportError, match="expected the model that takes a row to match Table.encode") as info:
        run(make_spec(tmp_path, epochs=1), out=tmp_path / "run", quiet=True, device="cpu")
    assert "found by exporting the model before training" in info.value.hint
    assert not (tmp_path / "run").exists()
