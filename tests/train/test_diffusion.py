"""Diffusion training: beta schedules, the noising step, a tiny denoiser trained and exported with its schedule,
then sampled with ONNX Runtime alone."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import archc.train as train
from archc.data import load
from archc.errors import SpecError
from archc.lower import lower
from archc.pipeline import compile_spec
from archc.runtime import Model
from archc.runtime.sample import sample
from archc.train.diffusion import Schedule, betas
from archc.tasks import objective_for


def test_schedules_decrease_alpha_bar_with_known_endpoints():
    for kind in ("linear", "cosine"):
        s = Schedule.of(kind, 1000)
        assert s.betas.dtype == torch.float64 and s.betas.shape == (1000,)
        assert ((s.betas > 0) & (s.betas < 1)).all() and (s.alpha_bar.diff() < 0).all()
    lin, cos = Schedule.of("linear", 1000), Schedule.of("cosine", 1000)
    assert lin.betas[0].item() == pytest.approx(1e-4) and lin.betas[-1].item() == pytest.approx(0.02)
    assert betas("linear", 100)[[0, -1]].tolist() == pytest.approx([1e-3, 0.2])   # scaled by 1000 / T
    assert cos.betas[0].item() < lin.betas[0].item() and cos.betas.max().item() <= 0.999
    assert cos.alpha_bar[-1].item() < 1e-4 and lin.alpha_bar[-1].item() < 1e-4
    half = cos.alpha_bar[499].item()   # cos^2 of (0.5 + s) / (1 + s) * pi / 2, relative to t = 0
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert half == pytest.approx(f(0.5) / f(0.0), rel=1e-9)
    assert half > lin.alpha_bar[499].item()  # the cosine schedule destroys information more slowly
    with pytest.raises(ValueError, match="unknown beta schedule"):
        betas("quadratic", 10)


def test_noised_is_the_closed_form_forward_process():
    s = Schedule.of("linear", 50)
    x0, eps, t = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2), torch.tensor([0, 10, 49])
    got = s.noised(x0, t, eps)
    for i in range(3):
        ab = s.alpha_bar[t[i]].float()
        assert torch.allclose(got[i], ab.sqrt() * x0[i] + (1 - ab).sqrt() * eps[i], atol=1e-6)


def tiny_spec(data: str, **train_extra) -> dict:
    """A denoiser for 4x4 images: conv features + a projected timestep embedding added per channel."""
    return {"archc": 1, "model": {"name": "tiny-ddpm"},
            "inputs": {"x": {"shape": [1, 4, 4]}, "t": {"shape": [1]}}, "task": {"kind": "diffusion"},
            "layers": [{"id": "temb", "op": "timestep_embedding", "from": "t", "dim": 8},
                       {"id": "tproj", "op": "linear", "out_features": 4, "act": "silu"},
                       {"id": "h", "op": "conv2d", "from": "x", "out_channels": 4, "kernel_size": 3,
                        "padding": "same", "act": "silu"},
                       {"id": "ht", "op": "add_channels", "from": ["h", "tproj"]},
                       {"id": "eps", "op": "conv2d", "out_channels": 1, "kernel_size": 3, "padding": "same"}],
            "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 3e-3},
                      "diffusion": {"steps": 50, "schedule": "linear"}} | train_extra,
            "data": {"source": data, "val_fraction": 0.25, "test_fraction": 0.25}}


@pytest.fixture
def images(tmp_path) -> str:
    rng = np.random.default_rng(0)
    x = (rng.random((48, 1, 4, 4)) > 0.5).astype(np.uint8) * 255     # uint8 images: [0, 1] once loaded
    np.savez(tmp_path / "img.npz", x=x, y=np.zeros(48, dtype=np.int64))
    return f"npz:{tmp_path / 'img.npz'}"


def test_tiny_denoiser_trains_exports_its_schedule_and_samples(images, tmp_path):
    result = train.run(tiny_spec(images, monitor="last"), out=tmp_path / "run", quiet=True)
    assert result.metric == "mse" and result.epochs_run == 2 and result.test["examples"] == 12
    assert result.best_epoch == 2                                       # monitor = "last": the final weights
    assert 0 < result.test["mse"] < 3 and result.test["mse"] == pytest.approx(result.test["loss"])
    model = Model.open(tmp_path / "run" / "model.onnx", device="cpu")
    meta = json.loads(model.metadata["archc.diffusion"])
    assert (meta["steps"], meta["schedule"], meta["prediction"]) == (50, "linear", "epsilon")
    assert meta["betas"] == betas("linear", 50).tolist()
    assert meta["data_range"] == [0.0, 1.0] and meta["model_range"] == [-1.0, 1.0]
    assert (meta["image_input"], meta["timestep_input"]) == ("x", "t")
    out = sample(model, 3, steps=5, sampler="ddim", seed=0)
    assert out.shape == (3, 1, 4, 4) and 0 <= out.min() and out.max() <= 1


def test_forward_feeds_noised_images_and_float_timesteps(images):
    spec = tiny_spec(images)
    compiled = compile_spec(spec)
    objective = objective_for(compiled.spec, compiled.graph)
    objective.check(load(images))                                       # the data's range: [0, 1]
    seen = []

    def net(x, t):
        seen.append((x, t))
        return torch.zeros_like(x)

    x = torch.rand(5, 1, 4, 4)
    out, eps = objective.forward(net, x, None, training=False)
    again, eps2 = objective.forward(net, x, None, training=False)
    (xt, t), (xt2, t2) = seen
    assert t.shape == (5, 1) and t.dtype == torch.float32 and (t == t.round()).all() and t.max() < 50
    assert torch.equal(eps, eps2) and torch.equal(t, t2) and torch.equal(xt, xt2)   # validation: fixed draws
    ab = objective.schedule.alpha_bar[t[:, 0].long()].float().view(-1, 1, 1, 1)
    assert torch.allclose(xt, ab.sqrt() * (2 * x - 1) + (1 - ab).sqrt() * eps, atol=1e-6)  # [0,1] -> [-1,1]
    objective.forward(net, x, None, training=True)
    assert not torch.equal(seen[-1][1], t) or not torch.equal(seen[-1][0], xt)
    model = lower(compiled.graph)
    out, eps = objective.forward(model, x, None, training=True)
    loss = objective.loss(out, eps)
    assert loss.shape == () and loss.item() == pytest.approx(((out - eps) ** 2).mean(dim=(1, 2, 3)).sum().item())


@pytest.mark.parametrize("case, message", [
    ("one-input", "diffusion training expects two inputs"),
    ("normalize", "expected normalize = false for diffusion"),
    ("output", r"expects the output 'pooled' shaped like the image \[batch, 1, 4, 4\]"),
])
def test_diffusion_spec_errors(images, tmp_path, case, message):
    spec = tiny_spec(images)
    if case == "one-input":
        del spec["inputs"]["t"]
        spec["layers"] = spec["layers"][2:3] + [{"id": "eps", "op": "conv2d", "out_channels": 1, "kernel_size": 1}]
    elif case == "normalize":
        spec["data"]["normalize"] = True
    else:
        spec["layers"].append({"id": "pooled", "op": "flatten"})
    with pytest.raises(SpecError, match=message):
        train.run(spec, out=tmp_path / "run", quiet=True)
