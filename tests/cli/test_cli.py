"""CLI tests through click's runner and through the installed `archc` script."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
DIGITS = SPECS / "digit_classifier.toml"
SCRIPT = Path(sys.executable).with_name("archc")


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_validate_prints_table_and_exact_param_count():
    r = run("validate", DIGITS)
    assert r.exit_code == 0, r.output
    assert "235,146" in r.output
    assert "[batch, 1, 28, 28]" in r.output and "fc1" in r.output


def test_validate_json():
    r = run("validate", DIGITS, "--json")
    data = json.loads(r.output)
    assert data["ok"] and data["total_params"] == 235_146
    assert [n["node"] for n in data["nodes"]] == ["image", "flatten_0", "fc1", "fc2", "logits"]
    assert data["outputs"]["logits"]["shape"] == ["batch", 10]


def test_validate_error_exit_1_one_line_per_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DIGITS.read_text().replace('op = "flatten"', 'op = "flaten"')
                   .replace("out_features = 128", "out_features = -1"))
    r = CliRunner().invoke(main, ["validate", str(bad)])
    assert r.exit_code == 1
    lines = [line for line in r.stderr.splitlines() if line]
    assert len(lines) == 2, r.stderr
    assert "layers[0]" in lines[0] and "did you mean 'flatten'" in lines[0]
    assert "layers[2] (fc2).out_features" in lines[1] and "received -1" in lines[1]
    assert "Traceback" not in r.output


def test_validate_json_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DIGITS.read_text().replace("out_features = 256", 'out_features = "many"'))
    r = CliRunner().invoke(main, ["validate", str(bad), "--json"])
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["ok"] is False
    assert data["errors"][0]["where"] == "layers[1] (fc1).out_features"


def test_debug_shows_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("archc = 1\n")
    r = CliRunner().invoke(main, ["validate", str(bad), "--debug"])
    assert r.exit_code != 0 and r.exception is not None


def test_usage_error_exit_2():
    r = CliRunner().invoke(main, ["validate"])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["frobnicate"])
    assert r.exit_code == 2


def test_stop_after():
    r = run("validate", DIGITS, "--stop-after", "check")
    assert r.exit_code == 0 and "load, check" in r.output


def test_schema_and_ops(tmp_path):
    r = run("schema")
    schema = json.loads(r.output)
    assert "layers" in schema["properties"]
    out = tmp_path / "schema.json"
    assert run("schema", "-o", out).exit_code == 0
    assert json.loads(out.read_text()) == schema
    r = run("ops")
    for name in ("linear", "conv2d", "batchnorm", "concat", "relu", "global_avg_pool"):
        assert f"\n{name} " in "\n" + r.output
    assert "out_features" in r.output and "default" in r.output
    ops = json.loads(run("ops", "--json").output)
    assert {o["op"] for o in ops} >= {"linear", "flatten", "reshape", "permute", "dropout", "conv1d", "add", "mul"}
    r = CliRunner().invoke(main, ["ops", "lineer"])
    assert r.exit_code == 1 and "did you mean 'linear'" in r.stderr


def test_build_then_infer_formats(tmp_path):
    model = tmp_path / "d.onnx"
    assert run("build", DIGITS, "-o", model).exit_code == 0
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = run("infer", model, "--input", tmp_path / "x.npy", "--output", tmp_path / "out.json")
    assert r.exit_code == 0, r.output
    assert "probability" in r.output and "5 example(s)" in r.output
    records = json.loads((tmp_path / "out.json").read_text())
    assert len(records) == 5 and {"label", "probability"} <= set(records[0])
    r = run("infer", model, "--input", tmp_path / "x.npy", "--output", tmp_path / "out.npy")
    assert np.load(tmp_path / "out.npy").shape == (5, 10)
    (tmp_path / "x.json").write_text(json.dumps(x[:2].tolist()))
    assert run("infer", model, "--input", tmp_path / "x.json").exit_code == 0
    np.savetxt(tmp_path / "x.csv", x[:3].reshape(3, -1), delimiter=",")
    r = run("infer", model, "--input", tmp_path / "x.csv", "--output", tmp_path / "out.csv")
    assert r.exit_code == 0 and len((tmp_path / "out.csv").read_text().strip().splitlines()) == 4


def test_infer_wrong_shape_is_one_clear_error(tmp_path):
    model = tmp_path / "d.onnx"
    assert run("build", DIGITS, "-o", model).exit_code == 0
    np.save(tmp_path / "x.npy", np.zeros((2, 784), dtype=np.float64))
    r = CliRunner().invoke(main, ["infer", str(model), "--input", str(tmp_path / "x.npy")])
    assert r.exit_code == 1
    assert "expected shape [batch, 1, 28, 28] float32" in r.stderr and "received [2, 784]" in r.stderr
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    r = CliRunner().invoke(main, ["infer", str(tmp_path / "junk.onnx"), "--input", str(tmp_path / "x.npy")])
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_two_input_model_via_npz(tmp_path):
    model = tmp_path / "t.onnx"
    assert run("build", SPECS / "two_branch.json", "-o", model).exit_code == 0
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "x.npz", image=rng.random((4, 1, 8, 8), dtype=np.float32),
             meta=rng.random((4, 4), dtype=np.float32))
    r = run("infer", model, "--input", tmp_path / "x.npz", "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)) == 4


@pytest.mark.skipif(not SCRIPT.exists(), reason="archc script not installed in this environment")
def test_installed_script(tmp_path):
    r = subprocess.run([str(SCRIPT), "validate", str(DIGITS), "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["total_params"] == 235_146
    bad = tmp_path / "bad.json"
    bad.write_text('{"archc": 1, "model": {"name": "x"}, "inputs": {"x": {"shape": [3]}}, '
                   '"layers": [{"op": "linear", "out_features": 0}]}')
    r = subprocess.run([str(SCRIPT), "validate", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {bad}: layers[0].out_features: expected")
    assert "Traceback" not in r.stderr
    r = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "archc" in r.stdout


def test_infer_scores_a_data_source(tmp_path):
    model = tmp_path / "d.onnx"
    assert run("build", SPECS / "digits_mlp.toml", "-o", model).exit_code == 0
    r = run("infer", model, "--input", "sklearn:digits", "--limit", "2")
    assert r.exit_code == 0, r.output
    assert "sklearn:digits, test split, 359 examples: accuracy" in r.output
    r = run("infer", model, "--input", "sklearn:digits", "--split", "val", "--json")
    data = json.loads(r.output)
    assert 0.0 <= data["metrics"]["accuracy"] <= 1.0 and len(data["records"]) > 0


def test_train_command_is_wired(tmp_path):
    r = CliRunner().invoke(main, ["train", str(SPECS / "digits_mlp.toml"), "--device", "cuda",
                                  "--out", str(tmp_path / "run")])
    import torch
    if not torch.cuda.is_available():
        assert r.exit_code == 1 and "expected a CUDA GPU" in r.stderr and "Traceback" not in r.output
