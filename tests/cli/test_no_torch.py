"""`validate`, `schema`, `ops`, `columns`, `init` and `infer` must not import torch (fast start; ORT-only inference)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "specs" / "digit_classifier.toml"

PROBE = """
import sys
from click.testing import CliRunner
from archc.cli import main
r = CliRunner().invoke(main, {args!r})
assert r.exit_code == 0, r.output
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""


def probe(args: list[str]) -> None:
    r = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


@pytest.mark.parametrize("args", [["validate", str(DIGITS)], ["validate", str(DIGITS), "--json"],
                                  ["schema"], ["ops"], ["ops", "--json"],
                                  ["columns", str(ROOT / "specs" / "data" / "penguins.csv")],
                                  ["init", str(ROOT / "specs" / "data" / "penguins.csv"), "-o", "-"]])
def test_commands_leave_torch_unimported(args):
    probe(args)


def test_infer_leaves_torch_unimported(tmp_path):
    model = tmp_path / "d.onnx"
    r = subprocess.run([sys.executable, "-m", "archc.cli", "build", str(DIGITS), "-o", str(model)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import numpy as np
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 28, 28), dtype=np.float32))
    probe(["infer", str(model), "--input", str(tmp_path / "x.npy")])


def test_infer_on_image_files_with_a_report_leaves_torch_unimported(tmp_path):
    """Pillow decodes, matplotlib (Agg) plots the report: neither pulls torch in."""
    model = tmp_path / "d.onnx"
    r = subprocess.run([sys.executable, "-m", "archc.cli", "build", str(DIGITS), "-o", str(model)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import numpy as np
    from PIL import Image
    for label in ("3", "7"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / label / "a.jpg")
    probe(["infer", str(model), "--input", str(tmp_path / "imgs"), "--report", str(tmp_path / "rep"),
           "--top-k", "2"])
    assert (tmp_path / "rep" / "report.png").exists()


def test_quantize_leaves_torch_unimported(tmp_path):
    """Scoring on a data source and calibrating (static int8) run on ONNX Runtime and numpy alone."""
    model = tmp_path / "m.onnx"
    r = subprocess.run([sys.executable, "-m", "archc.cli", "build", str(ROOT / "specs" / "digits_mlp.toml"), "-o",
                        str(model)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    probe(["quantize", str(model), "--int8", "static", "--max-drop", "100"])
    probe(["quantize", str(model), "--fp16", "--int8", "dynamic", "--max-drop", "100"])
