"""The run folder: one module names its files, prepares it, and writes and reads the result."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from archc.errors import InputError
from archc.train.run_dir import RunDir, RunResult

TRAIN = Path(__file__).resolve().parents[2] / "archc" / "train"


def test_layout_names_every_artifact_once(tmp_path):
    run = RunDir(tmp_path)
    assert run.spec == tmp_path / "spec.json" and run.weights == tmp_path / "checkpoint.safetensors"
    assert run.best.name == "best.safetensors" and run.state.name == "train_state.safetensors"
    assert run.state_json.name == "train_state.json" and run.metrics.name == "metrics.jsonl"
    assert run.curves.name == "curves.png" and run.onnx.name == "model.onnx" and run.result.name == "result.json"
    assert len(set(RunDir.FILES.values())) == len(RunDir.FILES)
    assert set(run.paths()) == {"spec", "checkpoint", "best", "train_state", "metrics", "curves", "onnx", "result"}
    assert RunDir(str(tmp_path)).root == tmp_path  # a str root is a Path


def _strings(tree: ast.AST) -> list[str]:
    """Every string constant of a module's code, docstrings left out (they may mention a file)."""
    docs = {id(body[0].value) for node in ast.walk(tree) if isinstance(body := getattr(node, "body", None), list)
            and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def test_no_other_train_module_spells_a_file_name():
    """Everything else asks RunDir for paths: a file name written elsewhere would be a second layout."""
    names = re.compile("|".join(re.escape(n) for n in RunDir.FILES.values()))
    assert names.search(" ".join(_strings(ast.parse((TRAIN / "run_dir.py").read_text()))))  # the check can see one
    for path in sorted(TRAIN.glob("*.py")):
        if path.name != "run_dir.py":
            found = [s for s in _strings(ast.parse(path.read_text())) if names.search(s)]
            assert not found, f"{path.name} names run-folder files: {found}"


def test_prepare_writes_the_spec_and_clears_an_earlier_run(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare({"archc": 1, "model": {"name": "a"}}, resume=False)
    assert json.loads(run.spec.read_text()) == {"archc": 1, "model": {"name": "a"}}
    for role in ("checkpoint", "train_state", "metrics", "result"):
        run.path(role).write_text("old")
    (run.root / ".spec.json.123.tmp").write_text("left by a killed writer")
    run.prepare({"archc": 1, "model": {"name": "b"}}, resume=False)  # a finished run: a fresh one replaces it
    assert not run.weights.exists() and not run.state.exists() and not run.result.exists()
    assert not list(run.root.glob(".*.tmp"))
    assert json.loads(run.spec.read_text())["model"]["name"] == "b"


def test_prepare_keeps_a_resumed_state_and_refuses_to_bury_an_unfinished_one(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(InputError, match="expected a checkpoint"):
        run.prepare({}, resume=True)
    run.state.write_text("state")
    run.prepare({"archc": 1}, resume=True)
    assert run.state.read_text() == "state"
    with pytest.raises(InputError, match="holds an unfinished run"):
        run.prepare({"archc": 1}, resume=False)
    with pytest.raises(InputError, match="holds an unfinished run"):
        run.check(resume=False)  # what the other ranks check
    assert run.state.exists()


def test_result_round_trip_and_metrics(tmp_path):
    run = RunDir(tmp_path)
    result = RunResult(str(tmp_path), "accuracy", 3, 2, {"epoch": 2, "val_accuracy": 0.9},
                       {"epoch": 3, "val_accuracy": 0.8}, {"loss": 0.3, "accuracy": 0.91, "examples": 60}, False,
                       1.25, run.paths())
    run.write_result(result)
    assert run.read_result() == result
    assert json.loads(run.result.read_text())["paths"]["onnx"] == str(tmp_path / "model.onnx")
    run.write_metrics([{"epoch": 1}, {"epoch": 2}])
    assert [json.loads(line) for line in run.metrics.read_text().splitlines()] == [{"epoch": 1}, {"epoch": 2}]
