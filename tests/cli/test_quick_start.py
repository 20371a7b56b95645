"""README's Quick start, run as written from a fresh clone's point of view: its shell block's commands in a folder
holding what a clone holds (specs/), with `archc` on the PATH as `source .venv/bin/activate` puts it there; and
`make demo` installing the project without the test extra."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's Quick start has no ```sh block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


def test_quick_start_is_five_commands_that_run_as_written(tmp_path):
    commands = _quick_start()
    assert len(commands) == 5 and commands[:2] == ["make demo", "source .venv/bin/activate"], commands
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    bin_dir = Path(sys.executable).parent  # the venv's bin: what `source .venv/bin/activate` puts first on PATH
    assert (bin_dir / "archc").exists(), "archc is not installed in this environment's bin folder"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    outputs = []
    for command in commands[2:]:
        argv = shlex.split(command)
        assert argv[0] == "archc", command
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
        outputs.append(proc.stdout + proc.stderr)
    result = json.loads((tmp_path / "runs" / "penguins" / "result.json").read_text())
    assert result["test"]["accuracy"] > 0.9, result["test"]
    assert (tmp_path / "runs" / "penguins" / "model.onnx").is_file()
    assert "test split, 69 rows, scored against column 'species': accuracy" in outputs[-1], outputs[-1][-800:]


def test_make_demo_installs_without_the_test_extra(tmp_path):
    """`make -n` on a fresh tree (no .venv): demo's set-up installs `-e .`, test's adds `.[test]`."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    demo = subprocess.run(["make", "-n", "demo"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    test = subprocess.run(["make", "-n", "test"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "pip install -q -e ." in demo and "[test]" not in demo, demo
    assert "pip install -q -e '.[test]'" in test and "pytest" in test, test
    assert demo.index("torch==2.13.0") < demo.index("pip install -q -e .")  # the CPU build first
