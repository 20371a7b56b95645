"""Objectives (loss, metric, checks), optimizers and learning-rate schedules."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from archc.errors import SpecError
from archc.pipeline import compile_spec
from archc.language.model import Optimizer, Schedule, Train
from archc.tasks import REGISTRY as OBJECTIVES, objective_for
from archc.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups, warmup_steps


def compiled(last_act: str | None = None, kind: str = "classification", loss: str | None = None,
             smoothing: float = 0.0):
    layer = {"op": "linear", "out_features": 4} | ({"act": last_act} if last_act else {})
    train = {"label_smoothing": smoothing} | ({"loss": loss} if loss else {})
    c = compile_spec({"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [5]}},
                      "task": {"kind": kind}, "layers": [layer], "train": train})
    return c.spec, c.graph


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_classification_loss_matches_torch_for_logits_probs_and_log_probs(eps):
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 0])
    want = F.cross_entropy(logits, y, label_smoothing=eps) * 6
    for act, out in ((None, logits), ("softmax", logits.softmax(1)), ("log_softmax", logits.log_softmax(1))):
        obj = objective_for(*compiled(act, smoothing=eps))
        assert torch.allclose(obj.loss(out, y), want, atol=1e-5), act
        assert obj.metric_sum(out, y) == (logits.argmax(1) == y).sum()


def test_regression_losses_and_metric():
    out, y = torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 2), torch.zeros(2, 4)
    mse = objective_for(*compiled(kind="regression"))
    mae = objective_for(*compiled(kind="regression", loss="mae"))
    assert mse.loss(out, y).item() == pytest.approx(2 * 7.5)
    assert mae.loss(out, y).item() == pytest.approx(2 * 2.5)
    assert mse.metric == "mae" and mse.metric_sum(out, y).item() == pytest.approx(5.0)
    assert not mse.better(3.0, 2.0, "metric") and mse.better(1.0, 2.0, "metric")


def test_objective_errors(monkeypatch):
    with pytest.raises(SpecError, match="diffusion training expects two inputs"):
        objective_for(*compiled(kind="diffusion"))
    monkeypatch.delitem(OBJECTIVES, "diffusion")  # every spec kind has an objective now: fake a missing one
    with pytest.raises(SpecError, match="supports task kinds"):
        objective_for(*compiled(kind="diffusion"))
    with pytest.raises(SpecError, match="expected a loss for classification"):
        objective_for(*compiled(loss="mse"))
    assert set(OBJECTIVES) >= {"classification", "regression"}


def test_schedules_with_warmup():
    total, per_epoch = 100, 10
    for name in ("constant", "step", "cosine"):
        s = Schedule(name=name, warmup_epochs=2, step_size=3, gamma=0.5)
        f = [lr_factor(s, i, total, per_epoch) for i in range(total)]
        assert f[:20] == pytest.approx([(i + 1) / 20 for i in range(20)])  # linear warmup to 1
        assert max(f) == pytest.approx(1.0)
        if name == "constant":
            assert f[20:] == [1.0] * 80
        elif name == "step":  # halves every 3 epochs from the start: epoch 3 -> 0.5, 6 -> 0.25, 9 -> 0.125
            assert (f[29], f[30], f[60], f[99]) == pytest.approx((1.0, 0.5, 0.25, 0.125))
        else:
            tail = f[20:]
            assert all(a >= b for a, b in zip(tail, tail[1:])) and tail[-1] < 1e-3


def test_onecycle_rises_from_lr_over_25_then_anneals():
    s, total = Schedule(name="onecycle"), 100
    f = [lr_factor(s, i, total, 10) for i in range(total)]
    warm = warmup_steps(s, total, 10)
    assert warm == 30 and f[0] == pytest.approx(1 / 25) and f[warm] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:warm], f[1:warm + 1])) and f[-1] < 1e-3


def test_scheduler_steps_per_optimizer_step():
    model = torch.nn.Linear(3, 2)
    train = Train(epochs=2, schedule=Schedule(name="cosine"), optimizer=Optimizer(name="sgd", lr=0.1))
    opt = build_optimizer(model, train.optimizer)
    sched = build_scheduler(opt, train, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.05)
    assert lrs[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.9)))


def test_optimizers_and_weight_decay_groups():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    groups = param_groups(model, 0.1)
    assert [len(g["params"]) for g in groups] == [1, 3] and [g["weight_decay"] for g in groups] == [0.1, 0.0]
    sgd = build_optimizer(model, Optimizer(name="sgd", momentum=0.9, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert isinstance(build_optimizer(model, Optimizer(name="adam", betas=[0.8, 0.9])), torch.optim.Adam)
    assert isinstance(build_optimizer(model, Optimizer(name="adamw")), torch.optim.AdamW)
    with pytest.raises(SpecError, match="momentum > 0"):
        build_optimizer(model, Optimizer(name="sgd", nesterov=True))
