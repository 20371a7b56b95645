"""[train] checkpoint_minutes: a long epoch is checkpointed mid-epoch by time, without changing what trains."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import archc.train.loop as loop
from archc import train
from archc.cli import main
from archc.train.state import CheckpointClock
from archc.train.distributed import Dist


def _run(h, tmp_path, name, minutes, monkeypatch):
    data = h.make_npz(tmp_path / "d.npz", n=200)
    spec = h.make_spec(tmp_path / f"{name}.json", data, train={"epochs": 2, "checkpoint_minutes": minutes})
    saved: list[tuple[int, int]] = []
    real = loop.save

    def counting(run_dir, learner, state, tally, dist, clock=None):
        saved.append((state.epoch, state.step_in_epoch))
        return real(run_dir, learner, state, tally, dist, clock)

    monkeypatch.setattr(loop, "save", counting)
    result = train.run(spec, out=tmp_path / name, quiet=True, device="cpu")
    return saved, result, load_file(tmp_path / name / "checkpoint.safetensors")


def test_a_due_clock_checkpoints_mid_epoch_and_changes_nothing_else(h, tmp_path, monkeypatch):
    monkeypatch.setattr(CheckpointClock, "due", lambda self, step: True)  # as if every step took minutes
    every, result, weights = _run(h, tmp_path, "every", 10, monkeypatch)
    steps = 8  # 120 training examples in batches of 16
    mid = [(e, s) for e, s in every if 0 < s < steps]
    assert mid == [(e, s) for e in range(2) for s in range(1, steps)], every  # every step but an epoch's last
    monkeypatch.undo()
    off, result_off, weights_off = _run(h, tmp_path, "off", 0, monkeypatch)
    assert off == [(1, 0), (2, 0)]  # the end of each epoch only (its position: the next epoch, step 0)
    assert all(torch.equal(weights[k], weights_off[k]) for k in weights)  # saving is not a step
    assert result.test == result_off.test


def test_the_clock_measures_time_since_the_last_checkpoint(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("archc.train.state.time.monotonic", lambda: now[0])
    clock = CheckpointClock(0.5, Dist(), torch.device("cpu"))
    now[0] += 29
    assert not clock.due(1)
    now[0] += 1
    assert clock.due(2)
    clock.reset()
    assert not clock.due(3)
    assert not CheckpointClock(0, Dist(), torch.device("cpu")).due(1)  # 0: off


@pytest.mark.parametrize("value", [-1, 20000, "soon"])
def test_a_bad_value_is_a_located_validate_error(h, tmp_path, value):
    spec = h.make_spec(tmp_path / "s.json", h.make_npz(tmp_path / "d.npz"), train={"checkpoint_minutes": value})
    r = CliRunner().invoke(main, ["validate", str(spec)])
    assert r.exit_code == 1 and "train.checkpoint_minutes" in r.output, r.output
