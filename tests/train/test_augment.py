"""archc.train.augment: kornia transforms and mixup/cutmix on batches, keyed and RNG-neutral; soft-target loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archc.language.model import Augment
from archc.pipeline import compile_spec
from archc.tasks import objective_for
from archc.train.augment import Augmenter, describe, summary

EVERY = {"random_resized_crop": {"scale": [0.3, 1.0]}, "hflip": 0.5, "vflip": 0.5, "rotation": 20.0,
         "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
         "policy": "randaugment", "random_erasing": {"p": 0.5}, "mixup": 0.8, "cutmix": 1.0}
ONE = [{"random_resized_crop": {}}, {"hflip": 1.0}, {"vflip": 1.0}, {"rotation": 30.0},
       {"color_jitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.2}},
       {"policy": "randaugment", "policy_n": 3, "policy_m": 15}, {"policy": "trivialaugment"},
       {"random_erasing": {"p": 1.0}}, {"mixup": 0.4}, {"cutmix": 1.0}, EVERY]


def batch(b=8, c=3, h=16, w=12):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, c, h, w, generator=g), torch.arange(b) % 5


def test_nothing_on_is_none():
    assert Augmenter.of(Augment(), 5) is None and Augmenter.of(None, 5) is None
    assert Augmenter.of(Augment(mixup=0.2, mix_prob=0.0), 5) is None  # mixing never happens


@pytest.mark.parametrize("on", ONE, ids=lambda d: "+".join(d) if len(d) < 3 else "every")
def test_each_transform_keeps_shape_and_dtype_is_keyed_and_leaves_the_rng(on):
    aug = Augmenter.of(Augment.model_validate(on), 5)
    x, y = batch()
    state = torch.get_rng_state()
    x1, y1 = aug(x, y, 11)
    assert torch.equal(state, torch.get_rng_state())
    assert x1.shape == x.shape and x1.dtype == torch.float32
    assert not torch.equal(x1, x)  # it did something
    x2, y2 = aug(x, y, 11)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    if on not in ({"hflip": 1.0}, {"vflip": 1.0}):  # those two are certain: no randomness left to differ
        assert not torch.equal(x1, aug(x, y, 12)[0])
    if Augment.model_validate(on).mixing():
        assert y1.shape == (8, 5) and y1.dtype == torch.float32
        assert torch.allclose(y1.sum(1), torch.ones(8))
    else:
        assert torch.equal(y1, y)


def test_flip_is_the_mirror_image():
    x, y = batch()
    assert torch.equal(Augmenter.of(Augment(hflip=1.0), None)(x, y, 0)[0], x.flip(3))
    assert torch.equal(Augmenter.of(Augment(vflip=1.0), None)(x, y, 0)[0], x.flip(2))


def test_mixup_mixes_pixels_and_labels_by_the_same_lambda():
    x, y = batch()
    x1, y1 = Augmenter.of(Augment(mixup=1.0), 5)(x, y, 3)
    lam = y1[0, y[0]].item() if y[0] != y[-1] else None
    assert lam is not None and torch.allclose(x1[0], lam * x[0] + (1 - lam) * x[-1], atol=1e-6)


def test_cutmix_label_weight_is_the_pasted_area():
    x, y = batch(h=32, w=32)
    x1, y1 = Augmenter.of(Augment(cutmix=1.0), 5)(x, y, 5)
    kept = (x1[0] == x[0]).all(0).float().mean().item()  # pixels still from example 0
    assert y1[0, y[0]].item() == pytest.approx(kept, abs=1e-6)


def compiled(act=None, smoothing=0.0):
    layer = {"op": "linear", "out_features": 4} | ({"act": act} if act else {})
    c = compile_spec({"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [5]}},
                      "task": {"kind": "classification"}, "layers": [layer], "train": {"label_smoothing": smoothing}})
    return objective_for(c.spec, c.graph)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_soft_target_loss_is_torch_cross_entropy_with_probabilities(eps):
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 0])
    soft = torch.softmax(torch.randn(6, 4), 1)
    want = F.cross_entropy(logits, soft, label_smoothing=eps, reduction="sum")
    onehot = F.one_hot(y, 4).float()
    for act, out in ((None, logits), ("softmax", logits.softmax(1)), ("log_softmax", logits.log_softmax(1))):
        obj = compiled(act, eps)
        assert torch.allclose(obj.loss(out, soft), want, atol=1e-5), act
        assert torch.allclose(obj.loss(out, onehot), obj.loss(out, y), atol=1e-5), act
        assert obj.metric_sum(out, onehot) == obj.metric_sum(out, y) == (logits.argmax(1) == y).sum()
    assert torch.equal(compiled().loss(logits, y), F.cross_entropy(logits, y, reduction="sum"))  # ints: as before


def test_describe_and_summary_say_what_is_on():
    spec = Augment(hflip=0.5, mixup=0.2, policy="randaugment")
    d = describe(spec)
    assert d["training_only"] is True and d["library"] == "kornia"
    assert d["transforms"] == {"hflip": 0.5, "policy": "randaugment", "policy_n": 2, "policy_m": 9, "mixup": 0.2,
                               "mix_prob": 1.0, "switch_prob": 0.5}
    assert summary(spec).startswith("augment: hflip 0.5, policy randaugment")
    assert describe(Augment(vflip=0.1))["transforms"] == {"vflip": 0.1}
