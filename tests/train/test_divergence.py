"""Divergence stops the run at the step it happens, before a checkpoint holds NaN; ties on the monitored metric
go to the lower validation loss (issue 11, item 4)."""
from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import archc.train as train
from archc.errors import ArchcError
from archc.tasks.classification import Classification


def diverging(h, tmp_path):
    """Adam warming up to lr 1e20 over 3 epochs, a checkpoint every step: the first steps are finite, the loss
    overflows a few steps later, well inside the first epoch."""
    return h.make_spec(tmp_path / "s.json", h.make_npz(tmp_path / "d.npz"),
                       train={"epochs": 3, "checkpoint_every": 1, "optimizer": {"name": "adam", "lr": 1e20},
                              "schedule": {"name": "constant", "warmup_epochs": 3}})


def finite_file(path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(path).values() if t.is_floating_point())


def test_divergence_stops_before_a_nan_checkpoint_and_resume_says_so_again(h, tmp_path):
    spec, out = diverging(h, tmp_path), tmp_path / "run"
    with pytest.raises(ArchcError, match=r"training diverged: .* at step \d+ \(epoch 1\)|weight\(s\) are NaN"):
        train.run(spec, out=out, quiet=True)
    state = json.loads((out / "train_state.json").read_text())
    assert state["epoch"] == 0 and state["step"] >= 1  # checkpoints were written before the divergence ...
    assert finite_file(out / "train_state.safetensors") and finite_file(out / "checkpoint.safetensors")  # ... finite
    with pytest.raises(ArchcError, match="training diverged"):  # resumable: it loads, then diverges again
        train.run(spec, out=out, quiet=True, resume=True)
    assert finite_file(out / "train_state.safetensors")


def test_divergence_exits_1_with_one_message(h, tmp_path):
    spec = diverging(h, tmp_path)
    r = subprocess.run([*h.cmd(str(spec), "--out", str(tmp_path / "run"), "--quiet")], capture_output=True,
                       text=True, env=h.env(), timeout=300)
    assert r.returncode == 1, r.stderr
    assert re.search(r"error: train: training diverged: the train loss at step (\d+) \(epoch 1\) is (inf|nan); "
                     r"checkpoints written so far \(up to step \d+\) hold finite weights \(lower the learning rate",
                     r.stderr), r.stderr
    assert "Traceback" not in r.stderr


def test_ties_go_to_the_lower_validation_loss_then_the_earlier_epoch():
    task = Classification.__new__(Classification)  # `better` reads class attributes only
    assert task.better(1.0, 1.0, "metric", loss=0.1, best_loss=0.7)       # same accuracy, lower loss: better
    assert not task.better(1.0, 1.0, "metric", loss=0.7, best_loss=0.7)   # a full tie: the earlier epoch stays
    assert not task.better(1.0, 1.0, "metric", loss=0.9, best_loss=0.7)
    assert not task.better(0.9, 1.0, "metric", loss=0.01, best_loss=0.7)  # the metric comes first
    assert task.better(0.5, 0.5, "loss", loss=0.5, best_loss=0.5) is False


def test_best_epoch_breaks_a_tie_on_accuracy_by_validation_loss(h, tmp_path):
    """Separable data: validation accuracy reaches 1.0 early and stays, while the loss keeps falling."""
    data = h.make_npz(tmp_path / "d.npz", n=100)
    spec = h.make_spec(tmp_path / "s.json", data, train={"epochs": 12, "optimizer": {"name": "adamw", "lr": 1e-2},
                                                        "schedule": "constant"})
    result = train.run(spec, out=tmp_path / "run", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    top = max(r["val_accuracy"] for r in rows)
    tied = [r for r in rows if r["val_accuracy"] == top]
    assert len(tied) > 1, "the data should make several epochs tie"
    assert result.best_epoch == min(tied, key=lambda r: (r["val_loss"], r["epoch"]))["epoch"]


def test_one_rank_nan_stops_both_ranks(h, tmp_path):
    """One example of finite but huge features overflows to a NaN loss on the rank whose share of a batch holds
    it: both ranks stop at that step (none waits forever in DDP's gradient all-reduce)."""
    data = h.make_npz(tmp_path / "d.npz", n=40)
    arrays = dict(np.load(data))
    arrays["x"][5] = 3e38
    np.savez(data, **arrays)
    spec = h.make_spec(tmp_path / "s.json", data, normalize=False, train={"epochs": 1, "batch_size": 8})
    r = subprocess.run(h.cmd(str(spec), "--out", str(tmp_path / "run"), "--nproc", "2", "--device", "cpu",
                             "--quiet"), capture_output=True, text=True, env=h.env(), timeout=240)
    assert r.returncode == 1, r.stderr
    said = re.findall(r"training diverged: the train loss at step (\d+) \(epoch 1\) is (nan|inf|NaN or inf on "
                      r"another rank);", r.stderr)
    assert len(said) == 2 and said[0][0] == said[1][0], r.stderr  # both ranks, at the same step
    assert {s[1] for s in said} & {"nan", "inf"} and "NaN or inf on another rank" in {s[1] for s in said}
    # The ranks' messages are the whole report: no torchrun log lines, traceback or failure box.
    assert "Traceback" not in r.stderr and "ChildFailedError" not in r.stderr and "torch/distributed" not in r.stderr
    assert all(line.startswith("error: ") for line in r.stderr.splitlines()), r.stderr
