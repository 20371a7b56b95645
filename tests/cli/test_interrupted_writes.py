"""Issue 19: `archc export` and `archc build -o` stopped by SIGTERM or SIGINT while the ONNX file's temporary exists
leave no temporary behind, and the earlier output stays as it was (archc.tempfiles)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = {"archc": 1, "model": {"name": "tiny"}, "inputs": {"x": {"shape": [4]}},
        "layers": [{"op": "linear", "out_features": 3, "act": "relu"}, {"op": "linear", "out_features": 2}]}

# archc's CLI with the final rename held back: the checked temporary exists, and the test is told where it is
HELD = """
import os, signal, sys, time, pathlib
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a shell starts archc, whatever the test runner's are
signal.signal(signal.SIGTERM, signal.SIG_DFL)
import archc.export.onnx as onnx_export
def held(src, path, data_name):
    pathlib.Path(os.environ["ARCHC_TEST_READY"]).write_text(src)
    time.sleep(60)
onnx_export._move_into_place = held
from archc.cli import main
sys.argv[0] = "archc"
main()
"""


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A run folder `archc export` reads: spec.json, export.json and the best weights (seeded, untrained)."""
    from archc.lower import lower
    from archc.pipeline import compile_spec
    from archc.train.checkpoint import save_weights

    folder = tmp_path_factory.mktemp("run")
    (folder / "spec.json").write_text(json.dumps(SPEC))
    (folder / "export.json").write_text("{}")
    save_weights(folder / "best.safetensors", lower(compile_spec(folder / "spec.json").graph, seed=0), {})
    return folder


def _interrupt(args: list[str], tmp: Path, sig: int) -> tuple[subprocess.CompletedProcess, str]:
    """Run archc with `args` until its temporary exists, send `sig`, wait; the process and the temporary's name."""
    ready = tmp / "ready"
    ready.unlink(missing_ok=True)
    env = os.environ | {"PYTHONPATH": str(ROOT), "ARCHC_TEST_READY": str(ready)}
    proc = subprocess.Popen([sys.executable, "-c", HELD, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() or not ready.read_text():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the export never reached its final rename"
            time.sleep(0.02)
        temporary = ready.read_text()
        assert Path(temporary).exists() and Path(temporary).name.endswith(".tmp")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), temporary


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_export_stopped_by_sigterm_leaves_no_temporary_and_the_earlier_file(run_folder, tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the earlier export")
    done, temporary = _interrupt(["export", str(run_folder), "-o", str(out)], tmp_path, signal.SIGTERM)
    assert done.returncode == -signal.SIGTERM, done.stderr.decode()[-2000:]  # ended by the signal, as before
    assert not Path(temporary).exists() and _leftovers(tmp_path) == []
    assert out.read_bytes() == b"the earlier export"


def test_build_stopped_by_sigint_leaves_no_temporary_and_the_earlier_file(tmp_path):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "tiny.onnx"
    out.write_bytes(b"the earlier build")
    done, temporary = _interrupt(["build", str(spec), "-o", str(out), "--no-optimize"], tmp_path, signal.SIGINT)
    assert done.returncode == 1 and b"Aborted!" in done.stderr, done.stderr.decode()[-2000:]  # click's Ctrl-C
    assert b"Traceback" not in done.stderr
    assert not Path(temporary).exists() and _leftovers(tmp_path) == []
    assert out.read_bytes() == b"the earlier build"
