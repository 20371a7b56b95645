"""End-to-end training in this process: artifacts, determinism, ONNX parity, user errors before training."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import archc.train as train
from archc.data import load
from archc.errors import ArchcError, DataError, InputError, SpecError
from archc.runtime import Model


def test_run_writes_every_artifact(tiny, tmp_path):
    out = tmp_path / "run"
    result = train.run(tiny, out=out, quiet=True)
    assert result.epochs_run == 3 and result.metric == "accuracy"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in lines] == [1, 2, 3]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "samples_per_s"} <= set(lines[0])
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("checkpoint.safetensors", "best.safetensors", "train_state.safetensors", "train_state.json",
                 "model.onnx", "spec.json", "result.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "spec.json").read_text())["train"]["epochs"] == 3
    assert result.test["accuracy"] > 0.6 and result.test["examples"] == 60
    assert json.loads((out / "result.json").read_text())["best_epoch"] == result.best_epoch


def test_same_seed_same_weights_and_flags_override(tiny, tmp_path):
    a = train.run(tiny, out=tmp_path / "a", quiet=True, epochs=2, seed=7, lr=1e-2, batch_size=8)
    b = train.run(tiny, out=tmp_path / "b", quiet=True, epochs=2, seed=7, lr=1e-2, batch_size=8)
    wa, wb = load_file(tmp_path / "a" / "checkpoint.safetensors"), load_file(tmp_path / "b" / "checkpoint.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.final == {**b.final, "seconds": a.final["seconds"], "samples_per_s": a.final["samples_per_s"]}
    used = json.loads((tmp_path / "a" / "spec.json").read_text())["train"]
    assert (used["epochs"], used["seed"], used["batch_size"], used["optimizer"]["lr"]) == (2, 7, 8, 1e-2)
    c = train.run(tiny, out=tmp_path / "c", quiet=True, epochs=2, seed=8, lr=1e-2, batch_size=8)
    assert c.final["train_loss"] != a.final["train_loss"]


def test_onnx_accuracy_equals_torch_test_accuracy(tiny, tmp_path):
    """model.onnx applies the recorded normalization itself: raw test examples in, the same accuracy out."""
    result = train.run(tiny, out=tmp_path / "run", quiet=True)
    spec = json.loads(tiny.read_text())
    data = load(spec["data"]["source"], task="classification", val_fraction=0.2, test_fraction=0.2)
    model = Model.open(tmp_path / "run" / "model.onnx", device="cpu")
    assert set(model.preprocess) == {"x"} and len(model.preprocess["x"]["mean"]) == 16
    logits = model.run({"x": data.test.x})["out"]
    assert float(np.mean(logits.argmax(1) == data.test.y)) == result.test["accuracy"]


def test_regression_early_stopping_and_sgd(h, tmp_path):
    data = h.make_npz(tmp_path / "r.npz", regression=True)
    spec = h.make_spec(tmp_path / "r.json", data, classes=1, kind="regression", normalize=False,
                     train={"epochs": 40, "early_stopping": 2, "monitor": "loss", "loss": "mae", "grad_clip": 1.0,
                            "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9, "nesterov": True},
                            "schedule": "constant"})
    result = train.run(spec, out=tmp_path / "run", quiet=True)
    assert result.metric == "mae" and result.stopped_early and result.epochs_run < 40
    assert result.best_epoch == result.epochs_run - 2


def test_cuda_requested_without_one_is_a_clear_error(tiny, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="expected a CUDA GPU for --device cuda"):
        train.run(tiny, out=tmp_path / "run", device="cuda", quiet=True)


@pytest.mark.parametrize("case", ["shape", "labels", "no-data", "two-inputs", "task"])
def test_bad_data_or_spec_fails_before_training(case, h, tmp_path):
    data = h.make_npz(tmp_path / "d.npz", classes=5 if case == "labels" else 3)
    spec = h.make_spec(tmp_path / "s.json", data, features=12 if case == "shape" else 16)
    raw = json.loads(spec.read_text())
    if case == "no-data":
        del raw["data"]
    elif case == "two-inputs":
        raw["inputs"]["z"] = {"shape": [2]}
        raw["layers"][0]["from"] = "x"
        # z is read (an unread input is a validate error now): fc1 + linear(z) feeds the output layer
        raw["layers"][1:1] = [{"id": "zf", "op": "linear", "out_features": 32, "from": "z"},
                              {"op": "add", "from": ["fc1", "zf"]}]
    elif case == "task":
        raw["task"]["kind"] = "diffusion"
    spec.write_text(json.dumps(raw))
    expected = {"shape": (DataError, r"expected examples shaped \[12\]"),
                "labels": (DataError, r"expected labels in 0..2 \(the output 'out' has 3 classes\)"),
                "no-data": (DataError, "no training data"), "two-inputs": (SpecError, "single-input spec"),
                "task": (SpecError, "diffusion training expects two inputs")}[case]
    with pytest.raises(expected[0], match=expected[1]):
        train.run(spec, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "train_state.safetensors").exists()


def test_resume_rules(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    fresh = train.run(tiny, out=out, resume=True, quiet=True, epochs=2)  # no checkpoint yet: from step 0
    assert "no checkpoint in" in capsys.readouterr().err and fresh.epochs_run == 2
    out = tmp_path / "first"
    first = train.run(tiny, out=out, quiet=True, epochs=2)
    assert first.test == fresh.test
    again = train.run(tiny, out=out, quiet=True, epochs=2, resume=True)  # finished: just re-exports
    assert again.epochs_run == 2 and again.test == first.test
    (out / "result.json").unlink()  # now it looks unfinished
    with pytest.raises(InputError, match="holds an unfinished run"):
        train.run(tiny, out=out, quiet=True, epochs=2)
    with pytest.raises(SpecError, match="expected the spec and recipe of the interrupted run"):
        train.run(tiny, out=out, quiet=True, epochs=3, resume=True)
    assert not (out / ".archc.lock").exists()  # released on errors too


def files(folder):
    """Every file under `folder` (TensorBoard's events in its tensorboard/ folder too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_run_is_never_lost(tiny, tmp_path):
    out = tmp_path / "run"
    train.run(tiny, out=out, quiet=True, epochs=1)
    before = files(out)
    assert any(name.startswith("tensorboard/events.out.tfevents.") for name in before)
    with pytest.raises(InputError, match="holds a finished run"):   # a rerun without --resume
        train.run(tiny, out=out, quiet=True, epochs=1)
    with pytest.raises(InputError, match="holds a finished run"):   # a typo in --data: refused before reading it
        train.run(tiny, out=out, quiet=True, data="npz:nosuch.npz")
    with pytest.raises(ArchcError):                                 # --force, bad data: checked before moving
        train.run(tiny, out=out, quiet=True, data="npz:nosuch.npz", force=True)
    assert files(out) == before
    second = train.run(tiny, out=out, quiet=True, epochs=1, seed=3, force=True)
    assert files(tmp_path / "run.old-1") == before  # its TensorBoard events went with it
    assert second.epochs_run == 1 and (out / "result.json").exists() and not (out / ".archc.lock").exists()


def test_a_second_run_into_a_folder_in_use_is_a_clear_error(tiny, tmp_path):
    from click.testing import CliRunner

    from archc.cli import main

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".archc.lock").write_text(f"{holder.pid}\n")
        r = CliRunner().invoke(main, ["train", str(tiny), "--out", str(out), "-q"])
        assert r.exit_code == 1 and f"is in use: another archc train (pid {holder.pid}) is writing it" in r.output
        assert "Traceback" not in r.output and not (out / "result.json").exists()
    finally:
        holder.kill()
        holder.wait()
