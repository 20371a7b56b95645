"""Regression targets are standardized for training (the train split's mean/std per target value) and restored in
the exported model: `archc infer` and a bare ONNX Runtime session read the targets' units, the metric is in those
units, and `--resume` and `archc export RUN_DIR` give the same restored model. Other task kinds are untouched."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import archc.train.loop as loop
from archc.cli import main
from archc.errors import SpecError
from archc.lower import lower
from archc.pipeline import compile_spec
from archc.train import run
from archc.train.checkpoint import load_weights

MEAN, SLOPE = 1000.0, 500.0  # y = 1000 + 500 * x0: far from the unit scale an untouched MSE trains well at


class Stopped(Exception):
    """A run cut short after an epoch (as a kill would, once its checkpoint is written)."""


def linear_data(path: Path, n: int = 400, columns: int = 1, seed: int = 0) -> Path:
    """x [n, 4] standard normal; y = 1000 + 500 * x0 (+ a second column 0.01 * x1 - 3 when asked) + small noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = MEAN + SLOPE * x[:, 0] + rng.normal(0, 5, n)
    if columns == 2:
        y = np.stack([y, 0.01 * x[:, 1] - 3 + rng.normal(0, 1e-4, n)], axis=1)
    np.savez(path, x=x, y=y.astype(np.float32))
    return path


def spec_of(data: Path, *, outputs: int = 1, epochs: int = 15, scale: bool | None = None, **train) -> dict:
    """A small regression MLP over linear_data (inputs not normalized: a bare ONNX Runtime client feeds raw x)."""
    spec = {"archc": 1, "model": {"name": "lin"}, "inputs": {"x": {"shape": [4]}}, "task": {"kind": "regression"},
            "layers": [{"op": "linear", "out_features": 16, "act": "relu"},
                       {"id": "y", "op": "linear", "out_features": outputs}],
            "train": {"epochs": epochs, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 1e-2}} | train,
            "data": {"source": f"npz:{data}"}}
    if scale is not None:
        spec["data"]["scale_target"] = scale
    return spec


def onnx_run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def infer_metrics(model: Path, source: str) -> dict[str, float]:
    r = CliRunner().invoke(main, ["infer", str(model), "--input", source, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["metrics"]


def test_a_regressor_trains_on_standardized_targets_and_exports_their_units(tmp_path):
    data = linear_data(tmp_path / "d.npz")
    result = run(spec_of(data), out=tmp_path / "run", quiet=True)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train_loss"] < 5  # the loss as trained: standardized targets (unscaled it is ~1e6)
    # archc infer on the exported file scores in the targets' units, as training's test metric did
    metrics = infer_metrics(Path(result.paths["onnx"]), f"npz:{data}")
    assert metrics["mae"] < 0.1 * SLOPE  # the targets' std is ~500
    assert metrics["mae"] == pytest.approx(result.test["mae"], rel=1e-4)
    # a bare ONNX Runtime session reads real units: y = 1000 + 500 x0
    x = np.zeros((3, 4), np.float32)
    x[:, 0] = [-1, 0, 1]
    np.testing.assert_allclose(onnx_run(Path(result.paths["onnx"]), x)[:, 0], [500, 1000, 1500], rtol=0.1)
    scale = json.loads(metadata(Path(result.paths["onnx"]))["archc.target_scale"])
    assert list(scale) == ["y"] and scale["y"]["mean"][0] == pytest.approx(MEAN, rel=0.05)
    assert scale["y"]["std"][0] == pytest.approx(SLOPE, rel=0.1)


def test_the_onnx_output_is_the_torch_modules_restored_output(tmp_path):
    data = linear_data(tmp_path / "d.npz")
    out = tmp_path / "run"
    run(spec_of(data, epochs=2), out=out, quiet=True)
    module = lower(compile_spec(out / "spec.json").graph, seed=0)
    load_weights(out / "best.safetensors", module)
    stats = json.loads((out / "export.json").read_text())["target_scale"]["y"]
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        standardized = module(torch.from_numpy(x)).numpy()  # what the weights themselves predict
    restored = standardized * np.float32(stats["std"]) + np.float32(stats["mean"])
    np.testing.assert_allclose(onnx_run(out / "model.onnx", x), restored, rtol=1e-5, atol=1e-3)
    assert not np.allclose(standardized, restored)
    names = {t.name for t in onnx.load(str(out / "model.onnx")).graph.initializer}
    assert {"target_scale.mean", "target_scale.std"} <= names  # in the graph, not only in metadata


def test_export_run_dir_and_resume_keep_the_restored_outputs(tmp_path, monkeypatch):
    data = linear_data(tmp_path / "d.npz")
    spec = spec_of(data, epochs=3)
    whole = tmp_path / "whole"
    run(spec, out=whole, quiet=True)
    x = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    expected = onnx_run(whole / "model.onnx", x)
    # archc export RUN_DIR: the same file from the best checkpoint and export.json's statistics
    r = CliRunner().invoke(main, ["export", str(whole), "-o", str(tmp_path / "again.onnx")])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(onnx_run(tmp_path / "again.onnx", x), expected)
    again, own = metadata(tmp_path / "again.onnx"), metadata(whole / "model.onnx")
    # the data source is recorded relative to each model's folder: the same file
    assert (again.pop("archc.source"), own.pop("archc.source")) == ("npz:d.npz", "npz:../d.npz")
    assert again == own
    # a run without export.json was trained by an archc before target scaling: exported as it trained, unrestored
    saved = (whole / "export.json").read_bytes()
    (whole / "export.json").unlink()
    from archc.train.api import export_run
    export_run(whole, output=tmp_path / "older.onnx")
    assert "archc.target_scale" not in metadata(tmp_path / "older.onnx")
    (whole / "export.json").write_bytes(saved)
    # a run stopped after its first epoch, then resumed: the same model as the uninterrupted run
    cut = tmp_path / "cut"
    cut_run(spec, cut, monkeypatch)
    assert not (cut / "model.onnx").exists()
    run(spec, out=cut, quiet=True, resume=True)
    np.testing.assert_array_equal(onnx_run(cut / "model.onnx", x), expected)


def cut_run(spec: dict, out: Path, monkeypatch) -> None:
    """Train `spec` into `out` and stop after its first epoch (its state and export.json written)."""
    end_epoch = loop.end_epoch

    def stop_after_one(learner, val, state, *args):
        end_epoch(learner, val, state, *args)
        if state.epoch == 1:
            raise Stopped

    with monkeypatch.context() as m:
        m.setattr(loop, "end_epoch", stop_after_one)
        with pytest.raises(Stopped):
            run(spec, out=out, quiet=True)


def test_a_resumed_run_keeps_the_scale_it_recorded(tmp_path, monkeypatch):
    """Resuming, the statistics come from the run's export.json, not fitted again: the weights learnt that scale
    (and a run recorded without one, by an archc before scaling or with scale_target = false, stays unscaled)."""
    data = linear_data(tmp_path / "d.npz")
    spec = spec_of(data, epochs=2)
    for case in ("shifted", "none", "bad"):
        out = tmp_path / case
        cut_run(spec, out, monkeypatch)
        recorded = json.loads((out / "export.json").read_text())
        if case == "shifted":
            recorded["target_scale"]["y"]["mean"] = [123.0]
        elif case == "none":
            del recorded["target_scale"]
        else:
            recorded["target_scale"]["y"]["std"] = ["wide"]
        (out / "export.json").write_text(json.dumps(recorded))
        if case == "bad":
            (tmp_path / "s.json").write_text(json.dumps(spec))
            r = CliRunner().invoke(main, ["train", str(tmp_path / "s.json"), "--out", str(out), "--resume", "--quiet"])
            assert r.exit_code == 1, r.output
            assert "expected the recorded target_scale of output 'y'" in r.output and "Traceback" not in r.output
            continue
        run(spec, out=out, quiet=True, resume=True)
        meta = metadata(out / "model.onnx")
        if case == "shifted":
            assert json.loads(meta["archc.target_scale"])["y"]["mean"] == [123.0]
        else:
            assert "archc.target_scale" not in meta


def test_each_target_column_gets_its_own_scale(tmp_path):
    data = linear_data(tmp_path / "d.npz", columns=2)
    result = run(spec_of(data, outputs=2, epochs=20), out=tmp_path / "run", quiet=True)
    stats = json.loads(metadata(Path(result.paths["onnx"]))["archc.target_scale"])["y"]
    assert stats["mean"][0] == pytest.approx(MEAN, rel=0.05) and stats["mean"][1] == pytest.approx(-3, rel=0.01)
    assert stats["std"][1] == pytest.approx(0.01, rel=0.2)  # per column: 0.01, not the pooled ~350
    x = np.random.default_rng(3).standard_normal((200, 4)).astype(np.float32)
    pred = onnx_run(Path(result.paths["onnx"]), x)
    assert np.mean(np.abs(pred[:, 1] - (0.01 * x[:, 1] - 3))) < 0.2 * 0.01  # the small column is learnt too


def test_scale_target_false_trains_on_the_targets_as_loaded(tmp_path):
    data = linear_data(tmp_path / "d.npz")
    result = run(spec_of(data, epochs=1, scale=False), out=tmp_path / "run", quiet=True)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train_loss"] > 1e5  # MSE in the targets' units
    assert "archc.target_scale" not in metadata(Path(result.paths["onnx"]))
    assert "target_scale" not in json.loads((tmp_path / "run" / "export.json").read_text())
    names = {t.name for t in onnx.load(result.paths["onnx"]).graph.initializer}
    assert not any(n.startswith("target_scale") for n in names)


def test_other_kinds_do_not_scale_and_refuse_scale_target(tiny, tmp_path):
    result = run(tiny, out=tmp_path / "run", quiet=True, epochs=1)
    assert "archc.target_scale" not in metadata(Path(result.paths["onnx"]))
    assert "target_scale" not in json.loads((tmp_path / "run" / "export.json").read_text())
    raw = json.loads(tiny.read_text())
    raw["data"]["scale_target"] = False  # off: allowed for any kind
    run(raw, out=tmp_path / "off", quiet=True, epochs=1)
    raw["data"]["scale_target"] = True
    with pytest.raises(SpecError, match="expected scale_target unset or false for classification") as info:
        run(raw, out=tmp_path / "on", quiet=True, epochs=1)
    assert info.value.where.endswith("data.scale_target")
    (tmp_path / "on.json").write_text(json.dumps(raw))
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "on.json")])
    assert r.exit_code == 1 and "data.scale_target" in r.output and "Traceback" not in r.output


def test_a_tabular_regressor_takes_a_row_and_answers_in_the_targets_units(tmp_path):
    """The row front (export.tabular) and the restoring affine compose: a bare ONNX Runtime session fed one cell
    per column gets grams, not standardized units. price = 1000 + 500 * size + 300 if color is red."""
    rng = np.random.default_rng(0)
    with open(tmp_path / "rows.csv", "w") as f:
        f.write("price,size,color\n")
        for _ in range(300):
            size, red = rng.normal(), rng.random() < 0.5
            f.write(f"{MEAN + SLOPE * size + 300 * red + rng.normal(0, 5):.3f},{size:.4f},{'red' if red else 'blue'}\n")
    spec = {"archc": 1, "model": {"name": "price"},
            "inputs": {"row": {"columns": {"size": "numeric", "color": {"type": "categorical",
                                                                        "categories": ["red", "blue"]}}}},
            "task": {"kind": "regression"},
            "layers": [{"op": "linear", "out_features": 16, "act": "relu"}, {"id": "y", "op": "linear",
                                                                             "out_features": 1}],
            "train": {"epochs": 15, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 1e-2}},
            "data": {"source": f"csv:{tmp_path / 'rows.csv'}", "target": "price"}}
    result = run(spec, out=tmp_path / "run", quiet=True)
    assert result.test["mae"] < 0.1 * SLOPE
    session = ort.InferenceSession(result.paths["onnx"], providers=["CPUExecutionProvider"])
    got = session.run(None, {"size": np.array([[0.0], [1.0]], np.float64), "color": np.array([["red"], ["blue"]])})
    np.testing.assert_allclose(got[0][:, 0], [MEAN + 300, MEAN + SLOPE], rtol=0.1)
