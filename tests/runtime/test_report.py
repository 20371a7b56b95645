"""`archc infer --report DIR` and `--top-k`: per-class precision/recall/F1, the confusion matrix and top-k accuracy
checked against scikit-learn; multilabel per-label figures; regression residuals; the folder rules; the PNG."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image
from sklearn.metrics import (classification_report, confusion_matrix, mean_absolute_error, mean_squared_error,
                             r2_score, top_k_accuracy_score)

from archc.cli import main

F32 = TensorProto.FLOAT
LABELS = ["cat", "dog", "bird", "fish"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def identity_model(tmp_path: Path, task: dict, width: int, kind: str) -> Path:
    """x [batch, width] → y = x: the npz's x are the model's scores (or values), chosen by the test."""
    shape = ["batch", width]
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", F32, shape)],
                          [helper.make_tensor_value_info("y", F32, shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    meta = {"archc.task": task, "archc.inputs": {"x": {"shape": shape, "dtype": "float32"}},
            "archc.outputs": {"y": {"shape": shape, "dtype": "float32", "kind": kind}}}
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=json.dumps(v))
    path = tmp_path / f"{task['kind']}.onnx"
    onnx.save(m, str(path))
    return path


@pytest.fixture
def classified(tmp_path):
    """150 examples of 4 classes (one never predicted, so a zero precision), scores noisy around the truth."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 150)
    scores = rng.normal(size=(150, 4)).astype(np.float32)
    scores[np.arange(150), y] += 1.5
    scores[:, 3] -= 10  # class 3 (fish) is never the likeliest
    np.savez(tmp_path / "scores.npz", x=scores, y=y, classes=np.array(LABELS))
    model = identity_model(tmp_path, {"kind": "classification", "labels": LABELS}, 4, "logits")
    return model, tmp_path / "scores.npz", scores, y


def test_report_matches_scikit_learn(classified, tmp_path):
    model, data, scores, y = classified
    rep = tmp_path / "rep"
    r = run("infer", model, "--input", f"npz:{data}", "--split", "all", "--report", rep, "--top-k", "2")
    assert r.exit_code == 0, r.output
    got = json.loads((rep / "report.json").read_text())
    pred = scores.argmax(1)
    want = classification_report(y, pred, labels=range(4), target_names=LABELS, output_dict=True, zero_division=0)
    for row in got["per_class"]:
        for key in ("precision", "recall", "f1"):
            assert row[key] == pytest.approx(want[row["label"]][key if key != "f1" else "f1-score"], abs=1e-12)
        assert row["support"] == want[row["label"]]["support"]
    for ours, theirs in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        for key in ("precision", "recall", "f1"):
            assert got[ours][key] == pytest.approx(want[theirs][key if key != "f1" else "f1-score"], abs=1e-12)
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["confusion_matrix"]["counts"] == confusion_matrix(y, pred, labels=range(4)).tolist()
    assert got["confusion_matrix"]["labels"] == LABELS
    assert got["top_2_accuracy"] == pytest.approx(top_k_accuracy_score(y, scores, k=2, labels=range(4)))
    assert got["per_class"][3]["precision"] == 0.0  # never predicted: 0, as zero_division=0
    png = Image.open(rep / "report.png")
    assert png.format == "PNG" and png.size[0] > 500
    assert f"wrote {rep / 'report.json'} and {rep / 'report.png'}" in r.stdout
    assert "top_2_accuracy" in r.stdout


def test_top_k_rows_and_true_label_column(classified):
    model, data, scores, y = classified
    r = run("infer", model, "--input", f"npz:{data}", "--split", "all", "--top-k", "3", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    recs = out["records"]
    assert [rec["true"] for rec in recs] == [LABELS[i] for i in y]
    for rec, row in zip(recs, scores):
        assert [t["label"] for t in rec["top"]] == [LABELS[i] for i in np.argsort(-row, kind="stable")[:3]]
    assert out["metrics"]["top_3_accuracy"] == pytest.approx(top_k_accuracy_score(y, scores, k=3, labels=range(4)))
    r = run("infer", model, "--input", f"npz:{data}", "--split", "all", "--top-k", "2", "--limit", "2")
    header = r.stdout.splitlines()[0].split()
    assert header[:4] == ["#", "row", "true", "label"] and header[-2:] == ["top", "2"]


def test_report_folder_is_never_overwritten(classified, tmp_path):
    model, data, _, _ = classified
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "mine.txt").write_text("a user's file")
    r = run("infer", model, "--input", f"npz:{data}", "--report", rep)
    assert r.exit_code == 1 and "--force moves it aside" in r.stderr and "Traceback" not in r.output
    assert sorted(p.name for p in rep.iterdir()) == ["mine.txt"]
    r = run("infer", model, "--input", f"npz:{data}", "--report", rep, "--force")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep.old-1" / "mine.txt").read_text() == "a user's file"
    assert sorted(p.name for p in rep.iterdir()) == ["report.json", "report.png"]
    (tmp_path / "afile").write_text("x")
    r = run("infer", model, "--input", f"npz:{data}", "--report", tmp_path / "afile")
    assert r.exit_code == 1 and "expected a folder for the report, received a file" in r.stderr


def test_regression_residuals_match_scikit_learn(tmp_path):
    rng = np.random.default_rng(1)
    target = rng.normal(size=(80, 1)).astype(np.float32)
    pred = (target + rng.normal(scale=0.3, size=(80, 1))).astype(np.float32)
    np.savez(tmp_path / "v.npz", x=pred, y=target)
    model = identity_model(tmp_path, {"kind": "regression"}, 1, "values")
    rep = tmp_path / "rep"
    r = run("infer", model, "--input", f"npz:{tmp_path / 'v.npz'}", "--split", "all", "--report", rep, "--json")
    assert r.exit_code == 0, r.output
    assert [rec["true"] for rec in json.loads(r.stdout)["records"]] == pytest.approx(target.ravel().tolist())
    got = json.loads((rep / "report.json").read_text())
    assert got["mae"] == pytest.approx(mean_absolute_error(target, pred), rel=1e-6)
    assert got["rmse"] == pytest.approx(np.sqrt(mean_squared_error(target, pred)), rel=1e-6)
    assert got["r2"] == pytest.approx(r2_score(target, pred), rel=1e-6)
    residuals = (target.astype(np.float64) - pred).ravel()
    assert got["residual_quantiles"]["0.5"] == pytest.approx(np.median(residuals))
    assert got["residual_quantiles"]["0.95"] == pytest.approx(np.quantile(residuals, 0.95))
    assert "pairs" not in got  # the plotted pairs are the outputs themselves, not part of the summary
    assert Image.open(rep / "report.png").format == "PNG"


def test_multilabel_per_label_figures_match_scikit_learn(tmp_path):
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 2, (60, 3))
    logits = (rng.normal(size=(60, 3)) + 2.0 * (truth - 0.5)).astype(np.float32)
    np.savez(tmp_path / "t.npz", x=logits, y=truth.astype(np.float32), classes=np.array(["a", "b", "c"]))
    model = identity_model(tmp_path, {"kind": "multilabel", "labels": ["a", "b", "c"]}, 3, "logits")
    rep = tmp_path / "rep"
    r = run("infer", model, "--input", f"npz:{tmp_path / 't.npz'}", "--split", "all", "--report", rep)
    assert r.exit_code == 0, r.output
    got = json.loads((rep / "report.json").read_text())
    on = (logits > 0).astype(int)  # sigmoid > 0.5
    want = classification_report(truth, on, target_names=["a", "b", "c"], output_dict=True, zero_division=0)
    for row in got["per_class"]:
        assert row["f1"] == pytest.approx(want[row["label"]]["f1-score"])
        assert row["precision"] == pytest.approx(want[row["label"]]["precision"])
        assert row["recall"] == pytest.approx(want[row["label"]]["recall"])
    assert got["micro_avg"]["f1"] == pytest.approx(want["micro avg"]["f1-score"])
    assert got["macro_avg"]["f1"] == pytest.approx(want["macro avg"]["f1-score"])
    assert Image.open(rep / "report.png").format == "PNG"


def test_report_needs_a_kind_that_makes_one(tmp_path):
    np.savez(tmp_path / "v.npz", x=np.zeros((4, 2), np.float32), y=np.zeros(4))
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", F32, ["batch", 2])],
                          [helper.make_tensor_value_info("y", F32, ["batch", 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(tmp_path / "plain.onnx"))
    r = run("infer", tmp_path / "plain.onnx", "--input", tmp_path / "v.npz", "--report", tmp_path / "rep")
    assert r.exit_code == 1 and "--report: expected labelled data" in r.stderr
