"""steps.jsonl and curves.png within epochs: about 50 points per epoch, each the mean over the steps since the last
one (so an epoch's points, weighted by their examples, give its metrics.jsonl row), rewritten during a long epoch,
and continued by --resume as an uninterrupted run writes them."""
from __future__ import annotations

import json
import math

import pytest

import archc.train.loop as loop
import archc.train.progress as progress
from archc import train

N, BATCH = 1000, 7  # 600 training examples in batches of 7: 86 steps per epoch, a point every 2


class Stopped(Exception):
    """A run cut short right after a mid-epoch checkpoint (as a kill would be)."""


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def spec(h, tmp_path, **train_keys):
    data = h.make_npz(tmp_path / "d.npz", n=N, features=16, classes=3)
    return h.make_spec(tmp_path / "s.json", data, train={"epochs": 2, "batch_size": BATCH} | train_keys)


def test_points_cover_each_epoch_and_average_to_its_row(h, tmp_path):
    run = tmp_path / "run"
    result = train.run(spec(h, tmp_path), out=run, quiet=True, device="cpu")
    points, epochs = rows(run / "steps.jsonl"), rows(run / "metrics.jsonl")
    steps = math.ceil(600 / BATCH)
    every = math.ceil(steps / progress.POINTS_PER_EPOCH)
    assert [p["step"] for p in points] == [e * steps + s for e in range(2) for s in range(1, steps + 1)
                                           if s % every == 0 or s == steps]
    assert result.paths["steps"] == str(run / "steps.jsonl")
    for e, row in enumerate(epochs):
        mine = [p for p in points if e < p["epoch"] <= e + 1]
        assert mine[-1]["epoch"] == e + 1 and sum(p["examples"] for p in mine) == 600
        for key in ("train_loss", "train_accuracy"):
            mean = sum(p[key] * p["examples"] for p in mine) / 600
            assert mean == pytest.approx(row[key], rel=1e-9, abs=1e-12), key
    first = [p["train_loss"] for p in points[:5]]
    assert len(set(first)) == 5  # points, not a running epoch mean repeated


def test_a_long_epoch_is_drawn_before_it_ends(h, tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "LIVE_S", 0.0)  # as if each point came after a long while
    seen: list[tuple[int, int]] = []
    real = progress.Progress.write

    def write(self, history, force):
        seen.append((len(history), len(self.steps.rows)))
        return real(self, history, force)

    monkeypatch.setattr(progress.Progress, "write", write)
    train.run(spec(h, tmp_path, epochs=1), out=tmp_path / "run", quiet=True, device="cpu")
    during = [s for s in seen if s[0] == 0]  # written before the first epoch's row
    assert len(during) >= 40 and during[0][1] == 1
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


def test_resume_continues_the_points_of_an_uninterrupted_run(h, tmp_path, monkeypatch):
    s = spec(h, tmp_path, checkpoint_every=30)
    whole = train.run(s, out=tmp_path / "whole", quiet=True, device="cpu")
    real, calls = loop.save, []

    def stop_mid_epoch(run_dir, learner, state, tally, dist, clock=None):
        real(run_dir, learner, state, tally, dist, clock)
        calls.append(state.step)
        if len(calls) == 5:  # at 30, 60, 86 (epoch 1's end), 90, 120: epoch 2, step 34 of 86
            raise Stopped

    monkeypatch.setattr(loop, "save", stop_mid_epoch)
    with pytest.raises(Stopped):
        train.run(s, out=tmp_path / "cut", quiet=True, device="cpu")
    assert calls[-1] == 120
    monkeypatch.setattr(loop, "save", real)
    train.run(s, out=tmp_path / "cut", quiet=True, device="cpu", resume=True)
    a, b = rows(tmp_path / "whole" / "steps.jsonl"), rows(tmp_path / "cut" / "steps.jsonl")
    assert [p["step"] for p in a] == [p["step"] for p in b]
    for p, q in zip(a, b):
        assert q["examples"] == p["examples"]
        assert q["train_loss"] == pytest.approx(p["train_loss"], rel=1e-6), p["step"]
    assert whole.epochs_run == 2


def test_a_foreign_steps_file_is_not_continued(tmp_path):
    from archc.train.run_dir import RunDir

    run = RunDir(tmp_path)
    (tmp_path / "steps.jsonl").write_text('{"step": 3}\n[1, 2]\n')
    assert run.read_steps(10) == []
    (tmp_path / "steps.jsonl").write_text('{"step": 3}\n{"step": 9}\n')
    assert run.read_steps(5) == [{"step": 3}]


def test_curves_are_drawn_at_most_every_few_seconds_and_when_forced(tmp_path, monkeypatch):
    from archc.train import curves

    now = [100.0]
    monkeypatch.setattr(curves.time, "monotonic", lambda: now[0])
    drawn: list[int] = []
    monkeypatch.setattr(curves, "plot", lambda history, metric, path, steps: drawn.append(len(history)))
    c = curves.Curves(tmp_path / "c.png", "accuracy")
    row = {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "train_accuracy": 0.5, "val_accuracy": 0.5}
    c.update([row])
    assert drawn == []  # a run's first seconds: nothing drawn (a short run draws once, at its end)
    now[0] += curves.MIN_INTERVAL_S
    c.update([row])
    c.update([row])  # nothing new
    now[0] += 1
    c.update([row, row | {"epoch": 2}])  # too soon
    c.update([row, row | {"epoch": 2}], force=True)
    assert drawn == [1, 2]
