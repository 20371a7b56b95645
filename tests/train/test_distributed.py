"""--nproc 2: two CPU processes (gloo, DistributedDataParallel) against one process on the same recipe.

Each global batch is shared out over the ranks and the summed loss is divided by the global batch size, so
both runs take the same steps in exact arithmetic; they differ only in float rounding (the order of sums in
the gradient all-reduce and in the metrics). Stated tolerance after 3 epochs of 90 steps:
weights within 1e-5 absolute (measured: 9e-8), losses within 1e-5 (a flipped borderline prediction
moves an accuracy by 1/n, so accuracies are compared within one example's worth; measured: equal).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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


def _children(pid: int) -> list[int]:
    """Every descendant of a process (Linux /proc), deepest last."""
    try:
        kids = [int(k) for k in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def _gone(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"  # a zombie has ended
    except OSError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("victim", ["launcher", "torchrun"])
def test_sigkill_of_the_launcher_ends_torchrun_and_its_workers(h, tmp_path, victim):
    """SIGKILL of the launcher, or of torchrun itself (whose own shutdown is then skipped: the ranks must end with
    it by the kernel's parent-death signal, not by torchrun's goodwill), leaves nothing running."""
    data = h.make_npz(tmp_path / "d.npz", n=4000, features=16, classes=3)
    spec = h.make_spec(tmp_path / "s.json", data, train={"epochs": 50, "batch_size": 8})
    out = tmp_path / "run"
    proc = subprocess.Popen(h.cmd(str(spec), "--out", str(out), "--nproc", "2", "--device", "cpu", "-q"),
                            env=h.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    family: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(family := _children(proc.pid)) < 3:  # torchrun and its two workers
            assert proc.poll() is None and time.monotonic() < deadline, "the workers never started"
            time.sleep(0.05)
        if victim == "torchrun":
            os.kill(family[0], signal.SIGKILL)  # the launcher's child; the ranks are torchrun's children
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 60
        while not all(_gone(p) for p in family):
            assert time.monotonic() < deadline, f"still running after the launcher's SIGKILL: {family}"
            time.sleep(0.1)
    finally:
        proc.kill()
        for pid in family:  # whatever the fix did not end, so a failure leaves nothing running
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
