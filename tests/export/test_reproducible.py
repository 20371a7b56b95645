"""Reproducible builds: the same spec, seed and weights give byte-identical files (issue 19).

Each file is built twice: once in this process, once in a fresh one with another hash seed (set and dict order
of strings), one thread for torch and ONNX Runtime, another working directory and another output folder (no path
or timing may reach a file). Every file each command writes is compared byte for byte: a dense model, a CNN whose
optimized graph is kept, a transformer language model with its KV-cache model, and `archc export` of a tiny
trained tabular run whose model takes a row."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
BUILDS = ["digits_mlp.toml", "residual_cnn.toml", "transformer_block_demo.toml"]


def commands(out: Path, run: Path) -> list[list[str]]:
    """The CLI calls whose outputs go to folder `out`, one folder per command."""
    calls = [["build", str(SPECS / name), "-o", str(out / name.split(".")[0] / "m.onnx"), "--seed", "3"]
             for name in BUILDS]
    return calls + [["export", str(run), "-o", str(out / "export" / "m.onnx")]]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_builds_are_byte_identical(tmp_path):
    run = tmp_path / "run"
    rows = tmp_path / "rows.csv"
    lines = (SPECS / "data" / "penguins.csv").read_text().splitlines()
    rows.write_text("\n".join(lines[:1] + lines[1::3]) + "\n")  # every third penguin: one epoch in a second
    r = CliRunner().invoke(main, ["train", str(SPECS / "penguins.toml"), "--data", f"csv:{rows}", "--out", str(run),
                                  "--epochs", "1", "-q"])
    assert r.exit_code == 0, r.output
    here, there = tmp_path / "a", tmp_path / "b"
    for call in commands(here, run):
        Path(call[-1] if call[0] == "export" else call[-3]).parent.mkdir(parents=True)
        r = CliRunner().invoke(main, call)
        assert r.exit_code == 0, r.output
    calls = commands(there, run)
    for call in calls:
        Path(call[-1] if call[0] == "export" else call[-3]).parent.mkdir(parents=True)
    code = ("import json, sys\nfrom click.testing import CliRunner\nfrom archc.cli import main\n"
            "for call in json.loads(sys.argv[1]):\n"
            "    r = CliRunner().invoke(main, call)\n"
            "    assert r.exit_code == 0, r.output\n")
    env = dict(os.environ, PYTHONHASHSEED="12345", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    other = tmp_path / "elsewhere"
    other.mkdir()
    done = subprocess.run([sys.executable, "-c", code, json.dumps(calls)], capture_output=True, text=True, env=env,
                          cwd=other, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = files(here), files(there)
    assert sorted(a) == sorted(b)
    assert {"transformer_block_demo/m.onnx", "transformer_block_demo/m.kv.onnx", "export/m.onnx"} <= set(a)
    assert [name for name in a if a[name] != b[name]] == []
