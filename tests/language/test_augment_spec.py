"""[data.augment]: pydantic ranges and unknown keys, and validate's rules, through `archc validate`."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from archc.cli import main

BASE = """archc = 1
[model]
name = "m"
[inputs.image]
shape = {shape}
dtype = "{dtype}"
{task}
[[layers]]
op = "flatten"
[[layers]]
op = "linear"
out_features = 4
[data]
source = "{source}"
[data.augment]
{augment}
"""
CLS = '[task]\nkind = "classification"'
REG = '[task]\nkind = "regression"'


def validate(tmp_path, augment: str, shape="[3, 8, 8]", dtype="float32", task=CLS):
    path = tmp_path / "a.toml"
    source = "images:imgs" if task == CLS else "npz:a.npz"  # images: sources feed classification only
    path.write_text(BASE.format(shape=shape, dtype=dtype, task=task, augment=augment, source=source))
    r = CliRunner().invoke(main, ["validate", str(path)])
    return r.exit_code, r.output


def test_every_transform_validates(tmp_path):
    code, out = validate(tmp_path, """random_resized_crop = { scale = [0.08, 1.0], ratio = [0.75, 1.33] }
hflip = 0.5
vflip = 0.1
rotation = 15
color_jitter = { brightness = 0.4, contrast = 0.4, saturation = 0.4, hue = 0.1, p = 0.8 }
policy = "randaugment"
policy_n = 2
policy_m = 9
random_erasing = { p = 0.25 }
mixup = 0.8
cutmix = 1.0
mix_prob = 1.0
switch_prob = 0.5""")
    assert code == 0, out


@pytest.mark.parametrize("augment, where, said", [
    ("hflip = 1.5", "data.augment.hflip", "expected a value <= 1.0, received 1.5"),
    ("hlfip = 0.5", "data.augment.hlfip", "unknown attribute 'hlfip' (did you mean 'hflip'"),
    ("rotation = -1", "data.augment.rotation", "expected a value >= 0"),
    ('policy = "autoaugment"', "data.augment.policy", "expected 'none', 'randaugment' or 'trivialaugment'"),
    ("random_resized_crop = { scale = [0.9, 0.5] }", "data.augment.random_resized_crop.scale",
     "expected [low, high] with low <= high, received [0.9, 0.5]"),
    ("random_resized_crop = { scael = [0.5, 1.0] }", "data.augment.random_resized_crop.scael", "did you mean 'scale'"),
    ("color_jitter = { hue = 0.7 }", "data.augment.color_jitter.hue", "expected a value <= 0.5"),
    ("random_erasing = { scale = [0.1] }", "data.augment.random_erasing.scale", "expected at least 2 items"),
    ("mixup = -0.2", "data.augment.mixup", "expected a value >= 0"),
])
def test_bad_options_are_named_by_path(tmp_path, augment, where, said):
    code, out = validate(tmp_path, augment)
    assert code == 1
    assert f"a.toml: {where}: " in out and said in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize("kw, where, said", [
    (dict(augment="mixup = 0.2", task=REG), "data.augment.mixup", "expected mixup = 0 and cutmix = 0 for regression"),
    (dict(augment="cutmix = 1.0", task=REG), "data.augment.cutmix", "only classification"),
    (dict(augment="hflip = 0.5", shape="[8]"), "data.augment", "expected a float32 [C, H, W] input"),
    (dict(augment="hflip = 0.5", shape="[2, 3, 8, 8]"), "data.augment", "received inputs.image float32 [2, 3, 8, 8]"),
    (dict(augment='policy = "trivialaugment"', shape="[1, 8, 8]"), "data.augment.policy",
     "expected 3 channels for a policy, received 1"),
    (dict(augment="color_jitter = { saturation = 0.3 }", shape="[1, 8, 8]"), "data.augment.color_jitter",
     "expected 3 channels for color_jitter saturation/hue"),
])
def test_validate_rules(tmp_path, kw, where, said):
    code, out = validate(tmp_path, **kw)
    assert code == 1
    assert f"a.toml: {where}: " in out and said in out, out


def test_brightness_on_one_channel_and_regression_flips_are_allowed(tmp_path):
    assert validate(tmp_path, "color_jitter = { brightness = 0.3 }", shape="[1, 8, 8]")[0] == 0
    assert validate(tmp_path, "hflip = 0.5", task=REG)[0] == 0


def test_augment_off_by_default_needs_nothing(tmp_path):
    code, out = validate(tmp_path, "", shape="[8]")
    assert code == 0, out
