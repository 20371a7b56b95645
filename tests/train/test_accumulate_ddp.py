"""[train] accumulate under --nproc 2 (DDP, no_sync on an optimizer step's first batches), with LoRA adapters and
a frozen weight: two CPU processes accumulating 2 batches of 7 take the steps one process takes on batches of 14, up
to float rounding."""
from __future__ import annotations

from safetensors.torch import load_file

import archc.train as train

WEIGHT_ATOL = 1e-5  # as tests/train/test_distributed.py states it


def weight_diff(a, b) -> float:
    x, y = load_file(a / "checkpoint.safetensors"), load_file(b / "checkpoint.safetensors")
    assert set(x) == set(y)
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def test_two_accumulating_processes_match_one_larger_batch(h, tmp_path, monkeypatch):
    data = h.make_npz(tmp_path / "d.npz", n=300)
    lora = {"rank": 2, "targets": ["fc1"]}  # DDP around the model and its adapters; fc1's bias and out train too
    recipe = {"epochs": 1, "lora": lora, "freeze": ["fc1.weight"]}
    two = h.make_spec(tmp_path / "two.json", data, train=recipe | {"batch_size": 7, "accumulate": 2})
    one = h.make_spec(tmp_path / "one.json", data, train=recipe | {"batch_size": 14})
    monkeypatch.setenv("PYTHONPATH", h.env()["PYTHONPATH"])  # the workers import archc from this checkout
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    train.run(two, out=tmp_path / "two", nproc=2, quiet=True, device="cpu", optimize=False)
    train.run(one, out=tmp_path / "one", quiet=True, device="cpu", optimize=False)
    assert weight_diff(tmp_path / "two", tmp_path / "one") <= WEIGHT_ATOL
    state = load_file(tmp_path / "two" / "train_state.safetensors")
    assert float(state["lora.fc1.lora_B"].abs().max()) > 0  # the adapters trained (and merged into fc1.weight)
