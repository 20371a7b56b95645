"""A tiny sweep spec on sklearn's digits (specs/digits_sweep.toml, made small: 2 epochs, narrow layers)."""
from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "specs" / "digits_sweep.toml"


def tiny_spec(path: Path, epochs: int = 2, sweep: dict | None = None) -> Path:
    """specs/digits_sweep.toml with few epochs, narrow widths and big batches, written as JSON to `path`."""
    raw = tomllib.loads(EXAMPLE.read_text())
    raw["params"]["width"] = 16
    raw["train"] |= {"epochs": epochs, "batch_size": 64}
    raw["train"]["schedule"] = "constant"
    raw["sweep"] = sweep if sweep is not None else {
        "params.width": {"int": [8, 48], "log": True},
        "train.optimizer.lr": {"log_uniform": [1e-3, 2e-2]},
        "train.batch_size": {"choice": [64, 128]}}
    path.write_text(json.dumps(raw, indent=2))
    return path


@pytest.fixture
def tiny():
    """tiny_spec (tests run with --import-mode=importlib, so they cannot import this file)."""
    return tiny_spec


def subprocess_env() -> dict[str, str]:
    """Environment for `python -m archc.cli` children: one thread each, archc importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def env():
    return subprocess_env()
