"""Tiny specs and data made on the spot for the training tests."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def make_npz(path: Path, n: int = 300, features: int = 16, classes: int = 3, seed: int = 0,
             regression: bool = False) -> Path:
    """A learnable set: labels from a fixed random linear rule (or a noisy linear target)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32) * 2 + 1
    w = rng.standard_normal((features, classes))
    y = (x @ w).astype(np.float32)[:, 0] if regression else np.argmax(x @ w, axis=1).astype(np.int64)
    np.savez(path, x=x, y=y)
    return path


def make_spec(path: Path, data: Path | str, *, features: int = 16, classes: int = 3, hidden: int = 32,
              train: dict | None = None, kind: str = "classification", dropout: float | None = None,
              normalize: bool = True) -> Path:
    """A JSON spec: [features] -> linear(hidden, relu) [-> dropout] -> linear(classes)."""
    layers: list[dict] = [{"id": "fc1", "op": "linear", "out_features": hidden, "act": "relu"}]
    if dropout is not None:
        layers.append({"op": "dropout", "p": dropout})
    layers.append({"id": "out", "op": "linear", "out_features": classes if kind == "classification" else 1})
    recipe = {"epochs": 3, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 3e-3},
              "schedule": {"name": "cosine", "warmup_epochs": 0.5}} | (train or {})
    spec = {"archc": 1, "model": {"name": "tiny"}, "inputs": {"x": {"shape": [features]}},
            "task": {"kind": kind}, "layers": layers, "train": recipe,
            "data": {"source": f"npz:{data}", "val_fraction": 0.2, "test_fraction": 0.2, "normalize": normalize}}
    path.write_text(json.dumps(spec))
    return path


def make_images(folder: Path, n: int = 48, size: int = 16, classes: int = 3, seed: int = 0) -> Path:
    """A JPEG class folder (folder/c0, folder/c1, ...) of `n` RGB images `size` x `size`, learnable: each class
    tints a different colour channel over random noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        k = i % classes
        pixels = rng.integers(0, 120, (size, size, 3))
        pixels[:, :, k % 3] += 120
        (folder / f"c{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"c{k}" / f"{i:04d}.jpg", quality=90)
    return folder


def make_image_spec(path: Path, images: Path, *, size: int = 16, classes: int = 3, train: dict | None = None,
                    data: dict | None = None, batchnorm: bool = True) -> Path:
    """A JSON spec of a tiny CNN (conv2d, batchnorm, pooled, linear) on an images: folder, read per batch
    ([data] in_memory = false) unless `data` says otherwise."""
    layers = [{"op": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "act": "relu"},
              *([{"op": "batchnorm"}] if batchnorm else []), {"op": "global_avg_pool"},
              {"op": "linear", "out_features": classes}]
    recipe = {"epochs": 2, "batch_size": 8, "optimizer": {"name": "adam", "lr": 1e-2}} | (train or {})
    spec = {"archc": 1, "model": {"name": "cnn"}, "inputs": {"image": {"shape": [3, size, size]}},
            "task": {"kind": "classification"}, "layers": layers, "train": recipe,
            "data": {"source": f"images:{images}", "val_fraction": 0.25, "test_fraction": 0.25,
                     "in_memory": False, "workers": 0} | (data or {})}
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test process: with pytest -n 2 on two cores, more threads only contend (a tiny
    MLP step runs several times slower when OpenMP threads outnumber the cores)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A classification spec over 300 examples of 16 features, 3 epochs."""
    return make_spec(tmp_path / "tiny.json", make_npz(tmp_path / "data.npz"))


def subprocess_env() -> dict[str, str]:
    """Environment for `python -m archc.train` children: one thread each, archc importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "archc.train", *args]


def state_step(out: Path) -> int:
    """The optimizer step a run folder's train_state.json records; -1 before the first checkpoint, or while it is
    being replaced (the tests that kill a run poll it until the run is past a step)."""
    try:
        return json.loads((out / "train_state.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


@pytest.fixture
def h():
    """The helpers above (tests run with --import-mode=importlib, so they cannot import this file)."""
    from types import SimpleNamespace
    return SimpleNamespace(make_npz=make_npz, make_spec=make_spec, make_images=make_images,
                           make_image_spec=make_image_spec, env=subprocess_env, cmd=train_cmd, root=ROOT,
                           state_step=state_step)
