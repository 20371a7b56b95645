"""torchvision checkpoints load through the zoo's mapping files of a few rules (index arithmetic, word placeholders,
numbering across stages) and the spec then computes what torchvision's model computes.

torchvision cannot be installed beside this torch, so its models are rebuilt here: small torch modules written after
torchvision's own source (torchvision/models/resnet.py: ResNet, BasicBlock, Bottleneck; mobilenetv2.py:
MobileNetV2, InvertedResidual, ConvNormActivation), with its module names and order, so that `state_dict()` has
torchvision's keys, shapes and order, and its forward. Anchors that they are torchvision's: the parameter counts
torchvision publishes for its models (resnet18 11,689,512, resnet50 25,557,032, mobilenet_v2 3,504,872), and a few
of the keys its published checkpoints hold (`layer1.0.downsample.1.running_var`, `features.17.conv.2.weight`)."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from archc.lower import lower
from archc.pipeline import compile_spec
from archc.weights import load_into

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "specs" / "zoo"


# ---- torchvision's ResNet, by its module names -----------------------------------------------------------------
class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottle(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: the stride in the 3x3
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, block: type, depths: list[int], classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for s, (planes, n) in enumerate(zip((64, 128, 256, 512), depths)):
            stride = 1 if s == 0 else 2
            down = None
            if stride != 1 or cin != planes * block.expansion:
                down = nn.Sequential(nn.Conv2d(cin, planes * block.expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(cin, planes, stride, down)]
            cin = planes * block.expansion
            blocks += [block(cin, planes, 1, None) for _ in range(1, n)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- torchvision's MobileNetV2, by its module names --------------------------------------------------------------
def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's ConvNormActivation: Sequential(conv, bn, relu6), so its tensors are `.0.weight`, `.1.*`."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class Inverted(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        self.residual = stride == 1 and cin == cout
        layers = [conv_bn(cin, hidden, 1)] if t != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]  # t, c, n, s: the paper's table, torchvision's inverted_residual_setting

    def __init__(self, classes: int) -> None:
        super().__init__()
        features: list[nn.Module] = [conv_bn(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                features.append(Inverted(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def test_the_rebuilt_models_are_torchvisions_by_count_and_names():
    counts = {"resnet18": ResNet(Basic, [2, 2, 2, 2], 1000), "resnet50": ResNet(Bottle, [3, 4, 6, 3], 1000),
              "mobilenet_v2": MobileNetV2(1000)}
    published = {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872}
    assert {k: sum(p.numel() for p in m.parameters()) for k, m in counts.items()} == published
    assert "layer1.0.downsample.1.running_var" in counts["resnet50"].state_dict()
    keys = counts["mobilenet_v2"].state_dict()
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "features.1.conv.1.weight",
            "features.17.conv.2.weight", "features.18.1.running_mean", "classifier.1.bias"} <= set(keys)


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """Weights moved off their init, batch-norm statistics of real activations (one forward in train mode)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()(torch.randn(8, 3, 64, 64, generator=g))
    return model.eval()


def spec_at(name: str, tmp: Path) -> dict:
    raw = tomllib.loads((ZOO / f"{name}.toml").read_text())
    raw["params"]["classes"] = 10
    raw["inputs"]["x"]["shape"] = [3, 64, 64]
    return raw


def loads_and_matches(name: str, reference: nn.Module, mapping: str, tmp: Path) -> int:
    """Save the reference's state_dict, load it into the spec through the mapping (strict: every tensor of either
    side used once), and compare the logits in torch; the mapping's rule count is returned."""
    weights = tmp / f"{name}.safetensors"
    save_file(reference.state_dict(), weights)
    module = lower(compile_spec(spec_at(name, tmp)).graph).eval()
    loaded = load_into(module, weights, ZOO / mapping)
    assert loaded.read == len(reference.state_dict()) == loaded.tensors
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        want, got = reference(x), module(x)
    assert want.shape == got.shape == (2, 10) and 0.1 < want.abs().max() < 100
    assert (got - want).abs().max() <= 1e-5 * max(1.0, float(want.abs().max()))
    data = tomllib.loads((ZOO / mapping).read_text())
    return len(data.get("map", [])) + len(data.get("keep", []))


@pytest.mark.parametrize("name, block, depths", [("resnet18", Basic, [2, 2, 2, 2]),
                                                 ("resnet50", Bottle, [3, 4, 6, 3])])
def test_torchvision_resnet_through_its_mapping(tmp_path, name, block, depths):
    """layer{s+1} -> stages.{s}: one rule for every convolution and batch norm of every block."""
    torch.manual_seed(0)
    rules = loads_and_matches(name, randomized(ResNet(block, depths, 10), 6), "resnet.torchvision.weights.toml",
                              tmp_path)
    assert rules <= 6


def test_torchvision_mobilenet_v2_through_its_mapping(tmp_path):
    """features.{n} numbers the 17 inverted-residual blocks through the 7 stages: [numbering.n] splits it back."""
    torch.manual_seed(0)
    rules = loads_and_matches("mobilenet_v2", randomized(MobileNetV2(10), 7), "mobilenet_v2.weights.toml",
                              tmp_path)
    assert rules <= 16
