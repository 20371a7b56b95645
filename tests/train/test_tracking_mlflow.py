"""MLflow, against a real local store (SQLite in tmp_path) read back with MlflowClient: the flattened hyperparameters,
every point and epoch row as metric history at its global step, the run's files as artifacts; --resume continues the
same MLflow run without logging a step twice; a tracking server that is down is one note, and the run finishes."""
from __future__ import annotations

import contextlib
import json

import pytest

from archc import train
from archc.train import progress

pytest.importorskip("mlflow")

N, BATCH = 200, 16  # 120 training examples: 8 steps per epoch, a point at each


class Stopped(Exception):
    """A run cut short a few steps after a mid-epoch checkpoint (as a kill would be)."""


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds) and a client on it."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with contextlib.chdir(folder):  # the store fixes its default artifact root (./mlruns) when it opens
        client = MlflowClient(uri)
        client.search_experiments()
    return uri, client


@pytest.fixture
def store(database, tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI on the module's SQLite store (artifacts under tmp_path/mlruns): MLflow is on."""
    uri, client = database
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    client.search_experiments()  # the tables exist before the run opens the store
    return client


def spec(h, tmp_path, **train_keys):
    data = h.make_npz(tmp_path / "d.npz", n=N, features=16, classes=3)
    return h.make_spec(tmp_path / "s.json", data, train={"epochs": 2, "batch_size": BATCH} | train_keys)


def history(client, run_id, key) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_params_metrics_and_artifacts_read_back(h, tmp_path, store):
    run = tmp_path / "run"
    train.run(spec(h, tmp_path), out=run, quiet=True, device="cpu", track=("mlflow",))
    run_id = json.loads((run / "tracking.json").read_text())["mlflow"]["run_id"]
    got = store.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "run"
    assert store.get_experiment(got.info.experiment_id).name == "tiny"  # the model's name
    params = got.data.params
    assert params["train.epochs"] == "2" and params["train.batch_size"] == str(BATCH)
    assert params["train.optimizer.name"] == "adamw" and float(params["train.optimizer.lr"]) == 3e-3
    points, epochs = rows(run / "steps.jsonl"), rows(run / "metrics.jsonl")
    for key in ("train_loss", "train_accuracy", "lr"):
        assert history(store, run_id, f"step/{key}") == [(p["step"], pytest.approx(p[key])) for p in points]
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert history(store, run_id, f"epoch/{key}") == [(e["step"], pytest.approx(e[key])) for e in epochs]
    artifacts = {a.path for a in store.list_artifacts(run_id)}
    assert {"model.onnx", "report.json", "report.png", "spec.json", "result.json", "summary.txt"} <= artifacts
    assert not (run / "tensorboard").exists()  # track=("mlflow",): TensorBoard not chosen


def test_resume_continues_the_run_without_a_step_twice(h, tmp_path, store, monkeypatch):
    s, run = spec(h, tmp_path, checkpoint_every=3), tmp_path / "run"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "resumed")  # MLflow's own variable names the experiment
    real = progress.Progress.step

    def stop_after_11(self, step, *args):
        real(self, step, *args)
        if step == 11:  # after the checkpoint at step 9; points 10 and 11 reach MLflow as the run closes
            raise Stopped

    monkeypatch.setattr(progress.Progress, "step", stop_after_11)
    with pytest.raises(Stopped):
        train.run(s, out=run, quiet=True, device="cpu", track=("mlflow",))
    run_id = json.loads((run / "tracking.json").read_text())["mlflow"]["run_id"]
    assert store.get_run(run_id).info.status == "FAILED"
    assert [s for s, _ in history(store, run_id, "step/train_loss")][-2:] == [10, 11]
    monkeypatch.setattr(progress.Progress, "step", real)
    train.run(s, out=run, quiet=True, device="cpu", resume=True, track=("mlflow",))
    assert json.loads((run / "tracking.json").read_text())["mlflow"]["run_id"] == run_id
    assert store.get_run(run_id).info.status == "FINISHED"
    points = rows(run / "steps.jsonl")
    assert history(store, run_id, "step/train_loss") == [(p["step"], pytest.approx(p["train_loss"])) for p in points]
    assert [s for s, _ in history(store, run_id, "step/train_loss")] == list(range(1, 17))
    experiment = store.get_run(run_id).info.experiment_id
    assert store.get_experiment(experiment).name == "resumed" and len(store.search_runs([experiment])) == 1


def test_a_server_that_is_down_is_one_note(h, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = train.run(spec(h, tmp_path, epochs=1), out=tmp_path / "run", quiet=True, device="cpu")
    assert result.epochs_run == 1 and (tmp_path / "run" / "result.json").is_file()
    assert (tmp_path / "run" / "tensorboard").is_dir()  # the other tracker goes on
    notes = [line for line in capfd.readouterr().err.splitlines() if "tracking:" in line]
    assert len(notes) == 1 and notes[0].startswith("archc: tracking: mlflow could not start (MlflowException: ")
    assert notes[0].endswith("training goes on without it")
