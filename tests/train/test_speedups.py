"""The trainer's step-speed choices (archc/train/devices.py): the fused optimizer, channels_last memory for 2-d
convolutions, opt-in torch.compile. Each must train the same model: checkpoints, resume and export as before."""
from __future__ import annotations

import json

import numpy as np
import onnx
import torch

import archc.train.checkpoint as ckpt
from archc import train
from archc.train.devices import channels_last, fused_optimizer, to_channels_last


def _conv(path, data, **recipe) -> None:
    spec = {"archc": 1, "model": {"name": "conv"}, "inputs": {"image": {"shape": [1, 8, 8]}},
            "task": {"kind": "classification"},
            "layers": [{"op": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "act": "relu"},
                       {"op": "flatten"}, {"op": "linear", "out_features": 3}],
            "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 3e-3}} | recipe,
            "data": {"source": f"npz:{data}", "val_fraction": 0.2, "test_fraction": 0.2}}
    path.write_text(json.dumps(spec))


def _images(path, n: int = 240):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = np.argmax(x.reshape(n, 64) @ rng.standard_normal((64, 3)), axis=1).astype(np.int64)
    np.savez(path, x=x, y=y)
    return path


def test_choices_by_device_and_model():
    cpu = torch.device("cpu")
    assert fused_optimizer(cpu)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    assert channels_last(conv, cpu) and not channels_last(torch.nn.Linear(2, 2), cpu)
    x, t = torch.randn(2, 3, 4, 5), torch.zeros(2, dtype=torch.long)
    a, b = to_channels_last((x, t))
    assert a.is_contiguous(memory_format=torch.channels_last) and b is t
    assert torch.equal(a, x)


def test_channels_last_fused_state_round_trip_continues_identically():
    """Optimizer state saved contiguous and loaded back keeps training bit-identically in channels_last."""
    def make():
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2))
        m = m.to(memory_format=torch.channels_last)
        return m, torch.optim.AdamW(m.parameters(), lr=1e-2, fused=True)

    def step(m, o):
        x = to_channels_last(torch.randn(8, 1, 8, 8))
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    m, o = make()
    for _ in range(3):
        step(m, o)
    tensors, scalars = ckpt.flatten_optimizer(o.state_dict())
    m2, o2 = make()
    m2.load_state_dict(m.state_dict())
    o2.load_state_dict(ckpt.unflatten_optimizer(tensors, scalars))
    for k in (5, 6):
        torch.manual_seed(k)
        step(m, o)
        torch.manual_seed(k)
        step(m2, o2)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_a_conv_model_trains_in_channels_last_and_exports(tmp_path, capsys):
    spec = tmp_path / "conv.json"
    _conv(spec, _images(tmp_path / "d.npz"))
    result = train.run(spec, out=tmp_path / "run")
    assert "channels_last" in capsys.readouterr().out
    assert result.test is not None
    onnx.checker.check_model(str(tmp_path / "run" / "model.onnx"))
    again = train.run(spec, out=tmp_path / "run", resume=True, quiet=True)  # finished: re-exports the same
    assert again.test == result.test


def test_compile_is_opt_in_and_trains_the_same_model(tmp_path, capsys):
    data = _images(tmp_path / "d.npz")
    eager, compiled = tmp_path / "eager.json", tmp_path / "compiled.json"
    _conv(eager, data, epochs=1)
    _conv(compiled, data, epochs=1, compile=True)
    a = train.run(eager, out=tmp_path / "a", quiet=True)
    b = train.run(compiled, out=tmp_path / "b")
    assert "torch.compile" in capsys.readouterr().out
    assert abs(a.test["accuracy"] - b.test["accuracy"]) <= 0.05, (a.test, b.test)
    onnx.checker.check_model(str(tmp_path / "b" / "model.onnx"))
