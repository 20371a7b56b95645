"""[train] accumulate = K: K batches per optimizer step take the step one batch of K x batch_size takes (the same
examples, the loss divided by the step's examples), up to float rounding; under --nproc (no_sync on the step's
first batches) and across --resume too. Steps, the schedule and checkpoint_every count optimizer steps."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import archc.train as train
import archc.train.loop as loop

WEIGHT_ATOL = 1e-5  # float rounding of sums taken in another order (measured: about 1e-7)


class Stopped(Exception):
    pass


def rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weight_diff(a, b) -> float:
    x, y = load_file(a / "checkpoint.safetensors"), load_file(b / "checkpoint.safetensors")
    assert set(x) == set(y)
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def test_accumulated_batches_take_the_step_of_one_larger_batch(h, tmp_path):
    data = h.make_npz(tmp_path / "d.npz", n=300)  # 180 training examples: the last step's batches are short
    recipe = {"epochs": 2, "grad_clip": 0.5}  # clipping sees the accumulated gradient
    small = h.make_spec(tmp_path / "small.json", data, train=recipe | {"batch_size": 8, "accumulate": 4})
    large = h.make_spec(tmp_path / "large.json", data, train=recipe | {"batch_size": 32})
    a = train.run(small, out=tmp_path / "a", quiet=True, device="cpu", optimize=False)
    b = train.run(large, out=tmp_path / "b", quiet=True, device="cpu", optimize=False)
    assert [(r["step"], r["lr"]) for r in rows(tmp_path / "a")] == [(r["step"], r["lr"]) for r in rows(tmp_path / "b")]
    assert rows(tmp_path / "a")[-1]["step"] == 2 * 6  # ceil(180 / 32) optimizer steps an epoch, not 23 batches
    assert weight_diff(tmp_path / "a", tmp_path / "b") <= WEIGHT_ATOL
    assert a.final["train_loss"] == pytest.approx(b.final["train_loss"], abs=1e-5)
    plain = h.make_spec(tmp_path / "plain.json", data, train=recipe | {"batch_size": 8})
    train.run(plain, out=tmp_path / "c", quiet=True, device="cpu", optimize=False)
    assert weight_diff(tmp_path / "a", tmp_path / "c") > 100 * WEIGHT_ATOL  # it is not batch 8 without accumulating


def test_an_interrupted_accumulating_run_resumes_bit_identically(h, tmp_path, monkeypatch):
    data = h.make_npz(tmp_path / "d.npz", n=300)
    spec = h.make_spec(tmp_path / "s.json", data, train={"epochs": 2, "batch_size": 8, "accumulate": 3,
                                                         "checkpoint_every": 2}, dropout=0.2)
    train.run(spec, out=tmp_path / "whole", quiet=True, device="cpu", optimize=False)
    real, calls = loop.save, []

    def stop_mid_epoch(run_dir, learner, state, tally, dist, clock=None):
        real(run_dir, learner, state, tally, dist, clock)
        calls.append((state.step, state.step_in_epoch))
        if len(calls) == 6:  # 8 optimizer steps an epoch: at 2, 4, 6, 8 (the epoch's end), 10, 12
            raise Stopped

    monkeypatch.setattr(loop, "save", stop_mid_epoch)
    with pytest.raises(Stopped):
        train.run(spec, out=tmp_path / "cut", quiet=True, device="cpu", optimize=False)
    assert calls[-1] == (12, 4)
    monkeypatch.setattr(loop, "save", real)
    train.run(spec, out=tmp_path / "cut", quiet=True, device="cpu", optimize=False, resume=True)
    a, b = load_file(tmp_path / "whole" / "train_state.safetensors"), load_file(tmp_path / "cut" / "train_state.safetensors")
    for k in (k for k in a if k.startswith(("model.", "optim."))):
        assert torch.equal(a[k], b[k]), k
    assert rows(tmp_path / "whole") == [r | {"seconds": q["seconds"], "samples_per_s": q["samples_per_s"]}
                                        for r, q in zip(rows(tmp_path / "cut"), rows(tmp_path / "whole"))]
