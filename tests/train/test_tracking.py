"""TensorBoard's event files, read back with TensorBoard's own reader: every point of steps.jsonl and row of
metrics.jsonl at its global step, the spec and summary as text, the hyperparameters; --resume logs no step twice; a
tracker that fails mid-run is noted once and the run finishes; a tracker asked for and not installed is one error
before anything is read."""
from __future__ import annotations

import json

import pytest

from archc import train
from archc.errors import InputError
from archc.train import progress, tracking

N, BATCH = 200, 16  # 120 training examples: 8 steps per epoch, a point at each


class Stopped(Exception):
    """A run cut short a few steps after a mid-epoch checkpoint (as a kill would be)."""


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def spec(h, tmp_path, **train_keys):
    data = h.make_npz(tmp_path / "d.npz", n=N, features=16, classes=3)
    return h.make_spec(tmp_path / "s.json", data, train={"epochs": 2, "batch_size": BATCH} | train_keys)


def events(run):
    """TensorBoard's reader over the run's event files (every event kept: no reservoir sampling)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    reader.Reload()
    return reader


def curve(reader, tag) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in reader.Scalars(tag)]


def expected(points: list[dict], key: str) -> list[tuple[int, float]]:
    return [(p["step"], p[key]) for p in points]


def same(got, want):
    """Steps equal; values equal as TensorBoard stores them (float32)."""
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6, abs=1e-7)


def test_events_hold_the_points_rows_spec_summary_and_hyperparameters(h, tmp_path):
    run = tmp_path / "run"
    train.run(spec(h, tmp_path), out=run, quiet=True, device="cpu")
    reader, points, epochs = events(run), rows(run / "steps.jsonl"), rows(run / "metrics.jsonl")
    assert len(points) == 16 and len(epochs) == 2
    for key in ("train_loss", "train_accuracy", "lr"):
        same(curve(reader, f"step/{key}"), expected(points, key))
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "samples_per_s"):
        same(curve(reader, f"epoch/{key}"), expected(epochs, key))
    assert "step/examples" not in reader.Tags()["scalars"] and "epoch/epoch" not in reader.Tags()["scalars"]

    def text(tag):
        return reader.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()

    assert json.loads(text("spec").strip("`\n")) == json.loads((run / "spec.json").read_text())
    assert "fc1" in text("summary") and "643" in text("summary")  # the node table, the parameter count

    from tensorboard.plugins.hparams import plugin_data_pb2

    content = reader.PluginTagToContent("hparams")
    started = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = started.session_start_info.hparams
    assert hp["train.epochs"].number_value == 2 and hp["train.batch_size"].number_value == BATCH
    assert hp["train.optimizer.name"].string_value == "adamw" and hp["train.optimizer.lr"].number_value == 3e-3
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"epoch/val_loss", "epoch/val_accuracy"}


def test_resume_logs_no_step_twice(h, tmp_path, monkeypatch):
    s, run = spec(h, tmp_path, checkpoint_every=3), tmp_path / "run"
    real = progress.Progress.step

    def stop_after_11(self, step, *args):
        real(self, step, *args)
        if step == 11:  # epoch 2, after the checkpoint at step 9: points 10 and 11 are in the events already
            raise Stopped

    monkeypatch.setattr(progress.Progress, "step", stop_after_11)
    with pytest.raises(Stopped):
        train.run(s, out=run, quiet=True, device="cpu")
    assert [p for p, _ in curve(events(run), "step/train_loss")][-3:] == [9, 10, 11]
    monkeypatch.setattr(progress.Progress, "step", real)
    train.run(s, out=run, quiet=True, device="cpu", resume=True)
    reader, points = events(run), rows(run / "steps.jsonl")
    same(curve(reader, "step/train_loss"), expected(points, "train_loss"))
    assert [p for p, _ in curve(reader, "step/train_loss")] == list(range(1, 17))
    same(curve(reader, "epoch/val_loss"), expected(rows(run / "metrics.jsonl"), "val_loss"))
    assert len(reader.Tensors("spec/text_summary")) == 1  # the resumed run does not describe it again


def test_a_tracker_that_fails_mid_run_is_noted_once_and_the_run_finishes(h, tmp_path, monkeypatch, capfd):
    calls = []

    def full_disk(self, row):
        calls.append(row["step"])
        if len(calls) == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracking.TensorBoard, "step", full_disk)
    run = tmp_path / "run"
    result = train.run(spec(h, tmp_path), out=run, quiet=True, device="cpu")
    assert calls == [1, 2, 3]  # dropped at its first failure
    assert (run / "result.json").is_file() and result.epochs_run == 2 and (run / "model.onnx").is_file()
    notes = [line for line in capfd.readouterr().err.splitlines() if "tracking:" in line]
    assert notes == ["archc: tracking: tensorboard failed (OSError: [Errno 28] No space left on device); training "
                     "goes on without it"]
    assert "epoch/val_loss" not in events(run).Tags()["scalars"]  # nothing after it was dropped


def test_no_tensorboard_writes_no_events(h, tmp_path):
    from click.testing import CliRunner

    from archc.cli import main

    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(spec(h, tmp_path, epochs=1)), "--out", str(run), "-q",
                                  "--device", "cpu", "--no-tensorboard"])
    assert r.exit_code == 0, r.output
    assert (run / "result.json").is_file() and not (run / "tensorboard").exists()
    assert not (run / "tracking.json").exists()


def test_a_tracker_not_installed_is_one_error_before_anything_is_read(h, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from archc.cli import main

    monkeypatch.setattr(tracking.WandB, "module", "archc_no_such_package")  # whether or not wandb is installed
    r = CliRunner().invoke(main, ["train", str(spec(h, tmp_path)), "--out", str(tmp_path / "run"), "-q", "--wandb",
                                  "--data", "npz:nosuch.npz"])  # the data are not read: the tracker fails first
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "--wandb: expected the archc_no_such_package package for --wandb, received none installed" in r.output
    assert "pip install 'archc[wandb]'" in r.output and not (tmp_path / "run").exists()


def test_the_choice_of_trackers(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.chosen() == ("tensorboard",)
    assert tracking.chosen({"track_tensorboard": True, "track_wandb": True}) == ("wandb",)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert tracking.chosen() == ("tensorboard", "mlflow")
    assert tracking.flags(("mlflow",)) == ["--no-tensorboard", "--mlflow"]  # a --nproc launcher's, for its workers
    assert tracking.flags(("tensorboard",)) == []
    with pytest.raises(InputError, match="expected a tracker"):
        tracking.check(("comet",))
    assert tracking.flatten({"optimizer": {"name": "adamw", "lr": 1e-3}, "sizes": [1, 2], "x": None}, "train") == \
        {"train.optimizer.name": "adamw", "train.optimizer.lr": 1e-3, "train.sizes": "[1, 2]", "train.x": "null"}


def test_wandb_gets_the_same_points_rows_and_files(h, tmp_path, monkeypatch):
    """W&B is not installed by the tests: a stand-in module with the calls archc makes of W&B's API records them."""
    import importlib.machinery
    import sys
    import types

    calls: dict = {"log": [], "files": []}

    class Run:
        id = "abc123"

        def log(self, data, step):
            calls["log"].append((step, data))

        def log_artifact(self, artifact):
            calls["artifact"] = artifact.name

        def finish(self, exit_code):
            calls["exit_code"] = exit_code

    class Artifact:
        def __init__(self, name, type):
            self.name = name

        def add_file(self, path):
            calls["files"].append(path)

    def init(**kwargs):
        calls["init"] = kwargs
        return Run()

    stub = types.ModuleType("wandb")
    stub.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    stub.init, stub.Artifact = init, Artifact
    monkeypatch.setitem(sys.modules, "wandb", stub)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "run"
    train.run(spec(h, tmp_path), out=run, quiet=True, device="cpu", track=("wandb",))
    assert calls["init"]["mode"] == "offline" and calls["init"]["dir"] == str(run)
    assert calls["init"]["config"]["train.epochs"] == 2 and calls["init"]["project"] == "tiny"
    points, epochs = rows(run / "steps.jsonl"), rows(run / "metrics.jsonl")
    steps = [(s, d["step/train_loss"]) for s, d in calls["log"] if "step/train_loss" in d]
    assert steps == [(p["step"], p["train_loss"]) for p in points]
    assert [(s, d["epoch/val_loss"]) for s, d in calls["log"] if "epoch/val_loss" in d] == \
        [(e["step"], e["val_loss"]) for e in epochs]
    assert str(run / "model.onnx") in calls["files"] and calls["artifact"] == "tiny-run" and calls["exit_code"] == 0
    assert json.loads((run / "tracking.json").read_text()) == {"wandb": {"id": "abc123"}}
    assert not (run / "tensorboard").exists()
