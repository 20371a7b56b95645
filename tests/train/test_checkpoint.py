"""Checkpoints: safetensors round trips of weights, optimizer state and RNG, without pickle."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from archc.errors import ModelError
import archc.train.checkpoint as ckpt
from archc.train.run_dir import RunDir


def _model_and_adam(steps: int = 3) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW([{"params": list(model.parameters())[:1], "weight_decay": 0.1},
                             {"params": list(model.parameters())[1:], "weight_decay": 0.0}], lr=1e-2)
    for _ in range(steps):
        _step(model, opt)
    return model, opt


def _step(model, opt) -> None:
    x = torch.randn(16, 4)
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()


def test_optimizer_state_round_trip_continues_identically():
    model, opt = _model_and_adam()
    tensors, scalars = ckpt.flatten_optimizer(opt.state_dict())
    assert all(k.startswith("optim.") for k in tensors) and "param_groups" in scalars
    model2, opt2 = _model_and_adam(0)
    model2.load_state_dict(model.state_dict())
    opt2.load_state_dict(ckpt.unflatten_optimizer(tensors, scalars))
    torch.manual_seed(5)
    _step(model, opt)
    torch.manual_seed(5)
    _step(model2, opt2)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_state_file_round_trip(tmp_path):
    model, opt = _model_and_adam()
    random.seed(3)
    np.random.seed(4)
    rng = ckpt.torch_rng(torch.device("cpu"))
    scalars = {"step": 7, "epoch": 1, "spec_sha256": "abc", "history": [{"epoch": 1, "val_loss": 0.5}]}
    ckpt.save_state(RunDir(tmp_path), model, opt, scalars, [{"rng": rng, "acc": torch.tensor([1.5, 2.0, 3.0],
                                                                                     dtype=torch.float64)}])
    want_py, want_np = random.random(), np.random.random()
    torch.rand(3)  # move the RNGs on
    saved = ckpt.load_state(RunDir(tmp_path))
    assert saved.scalars["step"] == 7 and saved.scalars["history"][0]["val_loss"] == 0.5
    model2, opt2 = _model_and_adam(0)
    ckpt.restore(saved, model2, opt2)
    assert random.random() == want_py and np.random.random() == want_np
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k])
    mine = saved.group("rank.0.")
    ckpt.set_torch_rng(mine["rng"], torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng[8:])
    assert mine["acc"].tolist() == [1.5, 2.0, 3.0]
    meta = ckpt.load_weights(RunDir(tmp_path).weights, model2)  # the plain weights file, written alongside
    assert meta["step"] == "7" and RunDir(tmp_path).state_json.exists()


def test_unreadable_or_foreign_checkpoints(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    model, _ = _model_and_adam(0)
    with pytest.raises(ModelError, match="could not read checkpoint"):
        ckpt.load_weights(tmp_path / "bad.safetensors", model)
    ckpt.save_weights(tmp_path / "other.safetensors", torch.nn.Linear(2, 2), {})
    with pytest.raises(ModelError, match="differs at"):
        ckpt.load_weights(tmp_path / "other.safetensors", model)


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '{"step": 1}'])
def test_corrupt_state_json_is_a_model_error_naming_the_file(tmp_path, body):
    from safetensors.torch import save_file

    run_dir = RunDir(tmp_path)
    save_file({"model.w": torch.zeros(2)}, str(run_dir.state), metadata={ckpt.META_KEY: body})
    with pytest.raises(ModelError) as e:
        ckpt.load_state(run_dir)
    assert e.value.file == str(run_dir.state) and "training state" in e.value.message


def test_a_failed_safetensors_write_is_an_oserror_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    """save_file streams from the tensors (no copy of the file in memory); its own error type (a full disk, as
    safetensors reports it) becomes an OSError naming the file asked for, and no temporary is left."""
    from safetensors import SafetensorError

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(ckpt, "st_save_file", full)
    path = tmp_path / "best.safetensors"
    with pytest.raises(OSError) as e:
        ckpt.save_weights(path, {"w": torch.ones(3)}, {"step": 1})
    assert e.value.filename == str(path) and "No space left" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_weights_written_streamed_read_back_equal(tmp_path):
    tensors = {"a": torch.randn(64, 32), "b": torch.arange(10), "c": torch.ones(2, 2, dtype=torch.float16)}
    ckpt.save_weights(tmp_path / "w.safetensors", tensors, {"step": 3})
    back, meta = ckpt.read_file(tmp_path / "w.safetensors")
    assert meta["step"] == "3" and set(back) == set(tensors)
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
