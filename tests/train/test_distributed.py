"""--nproc 2: two CPU processes (gloo, DistributedDataParallel) against one process on the same recipe.

Each global batch is shared out over the ranks and the summed loss is divided by the global batch size, so
both runs take the same steps in exact arithmetic; they differ only in float rounding (the order of sums in
the gradient all-reduce and in the metrics). Stated tolerance after 3 epochs of 90 steps:
weights within 1e-5 absolute (measured: 9e-8), losses within 1e-5 (a flipped borderline prediction
moves an accuracy by 1/n, so accuracies are compared within one example's worth; measured: equal).
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import archc.train as train

WEIGHT_ATOL, LOSS_ATOL = 1e-5, 1e-5


def test_two_processes_match_one(h, tmp_path, monkeypatch):
    data = h.make_npz(tmp_path / "d.npz", n=1000, features=16, classes=3)
    spec = h.make_spec(tmp_path / "s.json", data, train={"epochs": 3, "batch_size": 7})  # 7: uneven shares
    monkeypatch.setenv("PYTHONPATH", h.env()["PYTHONPATH"])  # the workers import archc from this checkout
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    two = train.run(spec, out=tmp_path / "two", nproc=2, quiet=True, device="cpu")
    one = train.run(spec, out=tmp_path / "one", quiet=True, device="cpu")
    a = load_file(tmp_path / "two" / "checkpoint.safetensors")
    b = load_file(tmp_path / "one" / "checkpoint.safetensors")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= WEIGHT_ATOL, f"weights differ by {diff:.2e}"
    n_val, n_test = 200, 200
    for key in ("train_loss", "val_loss"):
        assert two.final[key] == pytest.approx(one.final[key], abs=LOSS_ATOL), key
    assert two.final["val_accuracy"] == pytest.approx(one.final["val_accuracy"], abs=1.01 / n_val)
    assert two.test["accuracy"] == pytest.approx(one.test["accuracy"], abs=1.01 / n_test)
    assert two.epochs_run == one.epochs_run == 3
    assert not torch.equal(a["fc1.weight"], torch.zeros_like(a["fc1.weight"]))
