"""The run folder: one module names its files, prepares it, and writes and reads the result."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from archc.errors import InputError
from archc.train.run_dir import LOCK_ENV, RunDir, RunResult

TRAIN = Path(__file__).resolve().parents[2] / "archc" / "train"


def test_layout_names_every_artifact_once(tmp_path):
    run = RunDir(tmp_path)
    assert run.spec == tmp_path / "spec.json" and run.weights == tmp_path / "checkpoint.safetensors"
    assert run.best.name == "best.safetensors" and run.state.name == "train_state.safetensors"
    assert run.state_json.name == "train_state.json" and run.metrics.name == "metrics.jsonl"
    assert run.curves.name == "curves.png" and run.onnx.name == "model.onnx" and run.result.name == "result.json"
    assert len(set(RunDir.FILES.values())) == len(RunDir.FILES)
    assert set(run.paths()) == {"spec", "checkpoint", "best", "train_state", "metrics", "steps", "curves", "onnx", "result"}
    assert RunDir(str(tmp_path)).root == tmp_path  # a str root is a Path


def _strings(tree: ast.AST) -> list[str]:
    """Every string constant of a module's code, docstrings left out (they may mention a file)."""
    docs = {id(body[0].value) for node in ast.walk(tree) if isinstance(body := getattr(node, "body", None), list)
            and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def test_no_other_train_module_spells_a_file_name():
    """Everything else asks RunDir for paths: a file name written elsewhere would be a second layout. The table is
    archc.outputs.RUN_FILES (RunDir.FILES), where the check that no other command replaces them reads it."""
    names = re.compile("|".join(re.escape(n) for n in RunDir.FILES.values()))
    outputs = TRAIN.parent / "outputs.py"
    assert names.search(" ".join(_strings(ast.parse(outputs.read_text()))))  # the check can see one
    for path in sorted(TRAIN.glob("*.py")):
        found = [s for s in _strings(ast.parse(path.read_text())) if names.search(s)]
        assert not found, f"{path.name} names run-folder files: {found}"


def _finished(run: RunDir) -> None:
    """Fake a finished run's files."""
    for role in ("checkpoint", "best", "train_state", "metrics", "onnx", "result"):
        run.path(role).write_text("old " + role)


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_prepare_writes_the_spec_and_refuses_to_replace_a_finished_run(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare({"archc": 1, "model": {"name": "a"}}, resume=False).release()
    assert json.loads(run.spec.read_text()) == {"archc": 1, "model": {"name": "a"}}
    _finished(run)
    with pytest.raises(InputError, match=r"holds a finished run \(result.json\)") as err:
        run.prepare({"archc": 1, "model": {"name": "b"}}, resume=False)
    assert "--force" in err.value.hint and "another --out" in err.value.hint and "run.old-1" in err.value.hint
    assert run.result.read_text() == "old result" and run.weights.read_text() == "old checkpoint"
    assert json.loads(run.spec.read_text())["model"]["name"] == "a" and not run.lock_path.exists()


def test_force_moves_the_earlier_run_aside_and_keeps_the_users_files(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    run.prepare({"archc": 1, "model": {"name": "a"}}, resume=False).release()
    _finished(run)
    (run.root / "notes.txt").write_text("mine")
    (run.root / ".draft.tmp").write_text("mine too")                 # a user's hidden .tmp file
    (run.root / ".spec.json.k2x_9abc.tmp").write_text("left by a killed writer")
    (run.root.with_name("run.old-1")).mkdir()                         # taken: the next free number is used
    run.prepare({"archc": 1, "model": {"name": "b"}}, resume=False, force=True).release()
    old = tmp_path / "run.old-2"
    assert (old / "result.json").read_text() == "old result" and (old / "checkpoint.safetensors").exists()
    assert json.loads((old / "spec.json").read_text())["model"]["name"] == "a"
    assert json.loads(run.spec.read_text())["model"]["name"] == "b" and not run.result.exists()
    assert (run.root / "notes.txt").read_text() == "mine" and (run.root / ".draft.tmp").read_text() == "mine too"
    assert not (run.root / ".spec.json.k2x_9abc.tmp").exists()
    assert "moved the earlier run" in capsys.readouterr().err


def test_a_fresh_run_keeps_hidden_tmp_files_it_did_not_write(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / ".cache.tmp").write_text("a user's")
    (tmp_path / ".result.json.tmp").write_text("not archc's pattern (no random part)")
    (tmp_path / ".checkpoint.safetensors.abcd1234.tmp").write_text("archc's")
    run.prepare({"archc": 1}, resume=False).release()
    assert (tmp_path / ".cache.tmp").exists() and (tmp_path / ".result.json.tmp").exists()
    assert not (tmp_path / ".checkpoint.safetensors.abcd1234.tmp").exists()


def test_the_lock_refuses_a_second_run_and_takes_over_a_dead_ones(tmp_path, capsys):
    run = RunDir(tmp_path)
    claim = run.prepare({"archc": 1}, resume=False)
    assert run.lock_path.read_text().strip() == str(os.getpid())
    with pytest.raises(InputError, match=rf"is in use: another archc train \(pid {os.getpid()}\) is writing it"):
        RunDir(tmp_path).prepare({"archc": 1}, resume=False)
    with pytest.raises(InputError, match="is in use"):
        RunDir(tmp_path).prepare({"archc": 1}, resume=True)
    assert run.lock_path.exists()  # the refused run did not release the holder's lock
    claim.release()
    assert not run.lock_path.exists()
    dead = _dead_pid()
    run.lock_path.write_text(f"{dead}\n")
    run.prepare({"archc": 1}, resume=False).release()
    assert f"taking over the lock of pid {dead}, which no longer runs" in capsys.readouterr().err


def test_resume_without_a_checkpoint_starts_from_step_0(tmp_path, capsys):
    run = RunDir(tmp_path)
    run.spec.write_text("{}")                                         # killed before its first checkpoint
    run.lock_path.write_text(f"{_dead_pid()}\n")
    claim = run.prepare({"archc": 1}, resume=True)
    assert not claim.resuming and json.loads(run.spec.read_text()) == {"archc": 1}
    assert f"--resume: no checkpoint in {str(tmp_path)!r} yet; starting from step 0" in capsys.readouterr().err
    claim.release()


def test_prepare_keeps_a_resumed_state_and_refuses_to_bury_an_unfinished_one(tmp_path):
    run = RunDir(tmp_path)
    run.state.write_text("state")
    claim = run.prepare({"archc": 1}, resume=True)
    assert claim.resuming and run.state.read_text() == "state"
    claim.release()
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


def test_the_launchers_lock_covers_its_workers(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    launcher = _dead_pid()  # the launcher killed: its rank 0 worker still runs (here: this process)
    run.lock_path.write_text(f"{launcher}\n")
    monkeypatch.setenv(LOCK_ENV, str(launcher))
    claim = run.prepare({"archc": 1}, resume=False)  # rank 0: no lock of its own, its pid added
    assert not claim.locked and run.lock_pids() == [launcher, os.getpid()]
    monkeypatch.delenv(LOCK_ENV)
    with pytest.raises(InputError, match=rf"another archc train \(pid {os.getpid()}\)"):
        RunDir(tmp_path).prepare({"archc": 1}, resume=True)  # a --resume beside the orphaned worker


def test_an_empty_lock_is_in_use_while_new_and_stale_when_old(tmp_path):
    run = RunDir(tmp_path)
    run.lock_path.write_text("")  # a writer between its O_EXCL create and its pid
    with pytest.raises(InputError, match=r"another archc train \(just starting\)"):
        run.prepare({"archc": 1}, resume=False)
    os.utime(run.lock_path, (0, 0))
    run.prepare({"archc": 1}, resume=False).release()
    assert not run.lock_path.exists()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"run_dir": "x"}', "\udcff"])
def test_an_unreadable_result_is_a_model_error_naming_the_file(tmp_path, text):
    from archc.errors import ModelError

    run = RunDir(tmp_path)
    run.result.write_text(text, errors="surrogateescape")
    with pytest.raises(ModelError) as e:
        run.read_result()
    assert e.value.file == str(run.result) and "expected the run's result" in e.value.message
