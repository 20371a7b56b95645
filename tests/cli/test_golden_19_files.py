"""Golden messages for issue 19's classes "user files lost" and "internal errors" (a prompt that is not UTF-8): the
CLI on each case, the exact first line of stderr and exit 1, never a replaced input or a moved live run folder.
Paths are written as TMP/... and SPECS/..., pids as PID."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main

SPECS = Path(__file__).resolve().parents[2] / "specs"
MLP = SPECS / "digits_mlp.toml"
TINY = {"archc": 1, "model": {"name": "tiny"}, "inputs": {"x": {"shape": [4]}},
        "layers": [{"op": "linear", "out_features": 2}]}
LM = {"archc": 1, "model": {"name": "tiny-lm"}, "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}},
      "axes": {"seq": 16}, "task": {"kind": "language_model"},
      "layers": [{"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 8},
                 {"id": "logits", "op": "tied_linear", "tie": "emb"}]}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> SimpleNamespace:
    """A digits MLP and a tiny language model (.onnx, untrained) and a run folder `archc export` reads."""
    from archc.lower import lower
    from archc.pipeline import compile_spec
    from archc.train.checkpoint import save_weights

    root = tmp_path_factory.mktemp("made")
    (root / "lm.json").write_text(json.dumps(LM))
    for spec, out in ((MLP, root / "m.onnx"), (root / "lm.json", root / "lm.onnx")):
        r = CliRunner().invoke(main, ["build", str(spec), "-o", str(out), "--no-optimize"])
        assert r.exit_code == 0, r.output
    run = root / "run"
    run.mkdir()
    (run / "spec.json").write_text(json.dumps(TINY))
    (run / "export.json").write_text("{}")
    save_weights(run / "best.safetensors", lower(compile_spec(run / "spec.json").graph, seed=0), {})
    return SimpleNamespace(mlp=root / "m.onnx", lm=root / "lm.onnx", run=run)


Case = Callable[..., list]
CASES: dict[str, tuple[Case, str]] = {}


def case(expected: str):
    def add(fn: Case) -> Case:
        CASES[fn.__name__] = (fn, expected)
        return fn
    return add


def _live_lock(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".archc.lock").write_text(f"{os.getppid()}\n")  # a live process: the test runner's parent
    return folder


# user files lost
@case("error: --output: expected a file that is none of the command's inputs, received 'TMP/data.csv', which is "
      "--input 'TMP/data.csv' (writing it would replace what the command reads: name another file)")
def infer_output_is_the_csv_input(tmp, made):
    np.savetxt(tmp / "data.csv", np.zeros((3, 64)), delimiter=",")
    return ["infer", made.mlp, "--input", tmp / "data.csv", "-o", tmp / "data.csv"]


@case("error: --output: expected a file that is none of the command's inputs, received 'TMP/sub/../x.npy', which "
      "is --input 'TMP/x.npy' (writing it would replace what the command reads: name another file)")
def infer_output_is_the_npy_input_spelt_otherwise(tmp, made):
    np.save(tmp / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
    (tmp / "sub").mkdir()
    return ["infer", made.mlp, "--input", tmp / "x.npy", "-o", tmp / "sub" / ".." / "x.npy"]


@case("error: --output: expected a file outside the folders the command reads, received 'TMP/imgs/a.npy', a file "
      "in --input 'TMP/imgs' (it may be one of the inputs: name a file elsewhere)")
def infer_output_replaces_a_file_of_the_input_folder(tmp, made):
    (tmp / "imgs").mkdir()
    np.save(tmp / "imgs" / "a.npy", np.zeros((1, 8, 8), np.float32))
    return ["infer", made.mlp, "--input", tmp / "imgs", "-o", tmp / "imgs" / "a.npy"]


@case("error: --report: 'TMP/run' is in use: an archc train (pid PID) is writing it (wait for it to end or choose "
      "another; if no run is writing there, remove 'TMP/run/.archc.lock')")
def infer_report_force_on_a_live_run(tmp, made):
    (_live_lock(tmp / "run") / "metrics.jsonl").write_text("{}\n")
    return ["infer", made.mlp, "--input", "sklearn:digits", "--report", tmp / "run", "--force"]


@case("error: --report: 'TMP/runs' holds 'TMP/runs/a', which is in use: an archc train (pid PID) is writing it "
      "(wait for it to end or choose another; if no run is writing there, remove 'TMP/runs/a/.archc.lock')")
def infer_report_force_on_a_folder_holding_a_live_run(tmp, made):
    _live_lock(tmp / "runs" / "a")
    return ["infer", made.mlp, "--input", "sklearn:digits", "--report", tmp / "runs", "--force"]


@case("error: --report: expected a folder that holds none of the command's inputs, received 'TMP/d', which holds "
      "MODEL 'TMP/d/m.onnx' (choose another folder)")
def infer_report_force_on_the_models_folder(tmp, made):
    (tmp / "d").mkdir()
    shutil.copy(made.mlp, tmp / "d" / "m.onnx")
    return ["infer", tmp / "d" / "m.onnx", "--input", "sklearn:digits", "--report", tmp / "d", "--force"]


@case("error: --output: expected a file that is none of the command's inputs, received 'TMP/s.toml', which is "
      "SPEC 'TMP/s.toml' (writing it would replace what the command reads: name another file)")
def build_output_is_the_spec(tmp, made):
    shutil.copy(MLP, tmp / "s.toml")
    return ["build", tmp / "s.toml", "-o", tmp / "s.toml"]


@case("error: --output: 'TMP/run/m.onnx': its folder 'TMP/run' is in use: an archc train (pid PID) is writing it "
      "(wait for it to end or choose another; if no run is writing there, remove 'TMP/run/.archc.lock')")
def build_output_in_a_live_run(tmp, made):
    return ["build", MLP, "-o", _live_lock(tmp / "run") / "m.onnx"]


@case("error: --output: expected a file that is none of the command's inputs, received 'TMP/run/spec.json', which "
      "is RUN_DIR 'TMP/run/spec.json' (writing it would replace what the command reads: name another file)")
def export_output_is_the_runs_spec(tmp, made):
    shutil.copytree(made.run, tmp / "run")
    return ["export", tmp / "run", "-o", tmp / "run" / "spec.json"]


@case("error: --output: expected a file that is none of the command's inputs, received 'TMP/w.safetensors', which "
      "is --checkpoint 'TMP/w.safetensors' (writing it would replace what the command reads: name another file)")
def export_output_is_the_checkpoint(tmp, made):
    shutil.copy(made.run / "best.safetensors", tmp / "w.safetensors")
    return ["export", made.run, "--checkpoint", tmp / "w.safetensors", "-o", tmp / "w.safetensors"]


@case("error: --output: expected a file that is none of the command's inputs, received 'TMP/d.npz', which is "
      "--data 'TMP/d.npz' (writing it would replace what the command reads: name another file)")
def quantize_output_is_the_data(tmp, made):
    np.savez(tmp / "d.npz", x=np.zeros((20, 1, 8, 8), np.float32), y=np.arange(20) % 10)
    return ["quantize", made.mlp, "--fp16", "--data", f"npz:{tmp / 'd.npz'}", "-o", tmp / "d.npz"]


@case("error: --out: expected a file that is none of the command's inputs, received 'TMP/run/metrics.jsonl', "
      "which is --data 'TMP/run/metrics.jsonl' (writing it would replace what the command reads: name another file)")
def train_data_is_a_file_the_run_replaces(tmp, made):
    (tmp / "run").mkdir()
    (tmp / "run" / "metrics.jsonl").write_text('{"x": [1, 2], "y": 1}\n')
    (tmp / "run" / "result.json").write_text("{}")
    return ["train", MLP, "--data", f"jsonl:{tmp / 'run' / 'metrics.jsonl'}", "--out", tmp / "run", "--force"]


# internal errors
@case("error: --prompt: expected UTF-8 text, received byte 0xff at offset 3, which is not UTF-8 (the model reads "
      "the text's UTF-8 bytes: pass valid UTF-8)")
def prompt_that_is_not_utf8(tmp, made):
    return ["infer", made.lm, "--prompt", "def\udcff", "--max-new-tokens", "2"]  # argv b"def\xff" as Python sees it


def _normal(text: str, tmp: Path) -> str:
    return re.sub(r"pid \d+", "pid PID", text.replace(str(tmp), "TMP").replace(str(SPECS), "SPECS"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_line_of_stderr_and_exit_code(name, tmp_path, made):
    fn, expected = CASES[name]
    args = [str(a) for a in fn(tmp_path, made)]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    r = CliRunner().invoke(main, args)
    first = _normal(r.stderr.splitlines()[0] if r.stderr else "", tmp_path)
    assert (r.exit_code, first) == (1, expected), r.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written or moved


@pytest.mark.parametrize("content", ["99999999999999999999999999999999\n", "-1\n", "0\n", "\xff\xfe garbage", ""])
def test_a_lock_that_holds_no_pid_is_no_live_run(made, tmp_path, content):
    """A lock file holding a number too large for a pid, a negative one, bytes or nothing (old): never exit 3; no
    live run holds the folder, so `archc export` writes into it."""
    run = shutil.copytree(made.run, tmp_path / "run")
    (run / ".archc.lock").write_bytes(content.encode("latin-1"))
    os.utime(run / ".archc.lock", (0, 0))  # an empty lock this old is no run that is starting
    r = CliRunner().invoke(main, ["export", str(run), "--no-optimize"])
    assert r.exit_code == 0 and (run / "model.onnx").exists(), r.output
