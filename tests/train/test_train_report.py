"""`archc train` ends with report.json and report.png for the test split in the run folder (the same report as
`archc infer model.onnx --input SOURCE --report DIR`); an image folder trains with its images converted to the
spec's input by the rule infer applies."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import classification_report, confusion_matrix, r2_score

import archc.train as train
from archc.cli import main
from archc.data import load
from archc.runtime import Model


def test_train_writes_the_test_split_report(tiny, tmp_path):
    out = tmp_path / "run"
    result = train.run(tiny, out=out, quiet=True, epochs=2)
    got = json.loads((out / "report.json").read_text())
    assert Image.open(out / "report.png").format == "PNG"
    spec = json.loads(tiny.read_text())
    test = load(spec["data"]["source"], task="classification", val_fraction=0.2, test_fraction=0.2).test
    pred = Model.open(out / "model.onnx", device="cpu").run({"x": test.x})["out"].argmax(1)
    assert got["confusion_matrix"]["counts"] == confusion_matrix(test.y, pred, labels=range(3)).tolist()
    want = classification_report(test.y, pred, labels=range(3), output_dict=True, zero_division=0)
    assert got["macro_avg"]["f1"] == pytest.approx(want["macro avg"]["f1-score"])
    assert got["accuracy"] == pytest.approx(result.test["accuracy"]) and got["examples"] == 60
    # infer --report writes the same figures from the run's model.onnx
    r = CliRunner().invoke(main, ["infer", str(out / "model.onnx"), "--input", spec["data"]["source"],
                                  "--report", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert got.pop("baselines")["metric"] == "accuracy"  # training adds its tabular baselines (train.baselines)
    assert json.loads((tmp_path / "rep" / "report.json").read_text()) == got


def test_regression_run_writes_residuals(h, tmp_path):
    data = h.make_npz(tmp_path / "r.npz", regression=True)
    spec = h.make_spec(tmp_path / "r.json", data, classes=1, kind="regression")
    out = tmp_path / "run"
    train.run(spec, out=out, quiet=True, epochs=2)
    got = json.loads((out / "report.json").read_text())
    test = load(f"npz:{data}", task="regression", val_fraction=0.2, test_fraction=0.2).test
    pred = Model.open(out / "model.onnx", device="cpu").run({"x": test.x})["out"]
    assert got["r2"] == pytest.approx(r2_score(test.y, pred.ravel()), rel=1e-5)
    assert set(got["residual_quantiles"]) == {"0", "0.05", "0.25", "0.5", "0.75", "0.95", "1"}


def test_image_folder_trains_converted_to_the_spec_input(tmp_path, capfd):
    """RGB 6 x 5 PNGs and JPEGs (upper-case .JPG too) into a [1, 4, 4] spec: converted as infer converts them, with
    a note; a stray file is skipped, not fatal (main refused the shapes, the .JPG and notes.txt)."""
    rng = np.random.default_rng(0)
    for k, cls in enumerate(["dark", "light"]):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(8):
            px = np.clip(rng.integers(0, 60, (6, 5, 3)) + 150 * k, 0, 255).astype(np.uint8)
            Image.fromarray(px).save(tmp_path / "imgs" / cls / (f"{i}.png" if i % 2 else f"{i}.JPG"), quality=95)
    (tmp_path / "imgs" / "dark" / "notes.txt").write_text("not an image")
    spec = {"archc": 1, "model": {"name": "shade"}, "inputs": {"x": {"shape": [1, 4, 4]}},
            "layers": [{"op": "flatten"}, {"op": "linear", "out_features": 2}],
            "train": {"epochs": 2, "batch_size": 4},
            "data": {"source": "images:imgs", "val_fraction": 0.25, "test_fraction": 0.25}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    result = train.run(tmp_path / "s.json", out=tmp_path / "run", quiet=True)
    err = capfd.readouterr().err
    assert "RGB to gray (16)" in err and "resized to 4x4 (16" in err and "skipped 1 non-image file(s)" in err
    assert result.test["examples"] == 4 and (tmp_path / "run" / "report.json").exists()
    r = CliRunner().invoke(main, ["infer", str(tmp_path / "run" / "model.onnx"), "--input",
                                  str(tmp_path / "imgs"), "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["records"]) == 16
