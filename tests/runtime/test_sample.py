"""archc.runtime.sample: DDPM / DDIM sampling from an ONNX denoiser built by hand with onnx.helper, the PNG grid
and `archc infer --num-samples`."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import PIL.Image
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from archc.cli import main
from archc.data.png import SIGNATURE
from archc.errors import InputError, ModelError
from archc.runtime import Model
from archc.runtime.sample import grid, sample, timesteps, write_samples

T = 20
BETAS = np.linspace(1e-3, 0.2, T)
ALPHA_BAR = np.cumprod(1 - BETAS)
C = 0.2  # the only image of the "data set", every pixel, in model scale [-1, 1]: 0.6 in data scale [0, 1]


def denoiser(path: Path, t_shape: tuple = ("batch", 1)) -> Path:
    """The exact noise predictor of a data set holding one image (all pixels C):
    eps(x_t, t) = (x_t - sqrt(alpha_bar_t) C) / sqrt(1 - alpha_bar_t), read from tables indexed by t."""
    a = (1 / np.sqrt(1 - ALPHA_BAR)).astype(np.float32)                  # (T,)
    b = (np.sqrt(ALPHA_BAR) * C / np.sqrt(1 - ALPHA_BAR)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["t"], ["ti"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["ti", "flat"], ["tf"]),             # (B,)
             helper.make_node("Gather", ["A", "tf"], ["ga"]), helper.make_node("Gather", ["B", "tf"], ["gb"]),
             helper.make_node("Reshape", ["ga", "col"], ["ca"]), helper.make_node("Reshape", ["gb", "col"], ["cb"]),
             helper.make_node("Mul", ["x", "ca"], ["xa"]), helper.make_node("Sub", ["xa", "cb"], ["eps"])]
    inits = [numpy_helper.from_array(a, "A"), numpy_helper.from_array(b, "B"),
             numpy_helper.from_array(np.array([-1], np.int64), "flat"),
             numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), "col")]
    graph = helper.make_graph(nodes, "denoiser",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4]),
                               helper.make_tensor_value_info("t", TensorProto.FLOAT, list(t_shape))],
                              [helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["batch", 1, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what this onnxruntime reads
    meta = {"archc.task": json.dumps({"kind": "diffusion", "labels": None}),
            "archc.diffusion": json.dumps({"steps": T, "schedule": "test", "betas": BETAS.tolist(),
                                           "data_range": [0.0, 1.0], "image_input": "x", "timestep_input": "t"})}
    helper.set_model_props(model, meta)
    onnx.save(model, path)
    return path


@pytest.fixture
def model(tmp_path) -> Model:
    return Model.open(denoiser(tmp_path / "d.onnx"), device="cpu")


def test_timesteps_are_an_even_subsequence_with_both_ends():
    assert timesteps(T, T).tolist() == list(range(T))
    ts = timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 0 and ts[-1] == 999 and (np.diff(ts) > 0).all()
    with pytest.raises(InputError, match="expected 1..20"):
        timesteps(T, 21)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("steps", [None, 5])
def test_an_exact_denoiser_recovers_its_one_image(model, sampler, steps):
    """Both samplers, on all or on a subsequence of the steps, end at the data set's image (in data scale)."""
    x = sample(model, 6, steps=steps, sampler=sampler, seed=3)
    assert x.shape == (6, 1, 4, 4) and x.dtype == np.float32
    assert np.allclose(x, (C + 1) / 2, atol=1e-4)


def test_seeded_and_deterministic(tmp_path):
    """With a denoiser that is not exact (it predicts no noise at all), the samples depend on the seed alone."""
    path = denoiser(tmp_path / "d.onnx")
    m = onnx.load(path)
    for init in m.graph.initializer:  # A = B = 0: eps = 0
        if init.name in ("A", "B"):
            init.CopyFrom(numpy_helper.from_array(np.zeros(T, np.float32), init.name))
    onnx.save(m, path)
    zero = Model.open(path, device="cpu")
    for sampler in ("ddpm", "ddim"):
        a, b = sample(zero, 3, steps=4, sampler=sampler, seed=0), sample(zero, 3, steps=4, sampler=sampler, seed=0)
        c = sample(zero, 3, steps=4, sampler=sampler, seed=1)
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        assert a.shape == (3, 1, 4, 4) and a.min() >= 0 and a.max() <= 1


def test_write_samples_npy_and_a_valid_png(model, tmp_path):
    x = sample(model, 5, steps=3, sampler="ddim")
    png = write_samples(tmp_path / "s.npy", x)
    assert png == tmp_path / "s.png"
    assert np.array_equal(np.load(tmp_path / "s.npy"), x)
    data = png.read_bytes()
    assert data[:8] == SIGNATURE and data[12:16] == b"IHDR"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    pixels = grid(x)                      # 3 columns x 2 rows of 4x4 images at scale 4, 1-pixel separators
    assert (height, width) == pixels.shape == (2 * 17 + 1, 3 * 17 + 1) and (depth, color) == (8, 0)
    assert np.array_equal(np.asarray(PIL.Image.open(png)), pixels)  # Pillow reads what archc wrote
    assert pixels[1, 1] == round(0.6 * 255) and pixels[0, 0] == 128
    with pytest.raises(InputError, match="expected an .npy output"):
        write_samples(tmp_path / "s.png", x)


def test_not_a_diffusion_model(tmp_path):
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])]),
        opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="expected a diffusion model"):
        sample(Model.open(tmp_path / "m.onnx", device="cpu"), 2)


def test_cli_infer_num_samples(tmp_path):
    path = denoiser(tmp_path / "d.onnx", t_shape=("batch",))   # a [batch] timestep input works too
    out = tmp_path / "samples.npy"
    r = CliRunner().invoke(main, ["infer", str(path), "--num-samples", "4", "--steps", "3", "--sampler", "ddim",
                                  "--seed", "2", "--output", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "4 sample(s) [1, 4, 4] with ddim" in r.output and "samples.png" in r.output
    assert np.load(out).shape == (4, 1, 4, 4) and (tmp_path / "samples.png").read_bytes()[:8] == SIGNATURE
    both = CliRunner().invoke(main, ["infer", str(path), "--num-samples", "2", "--input", str(out)])
    assert both.exit_code == 2 and "expected exactly one of --input" in both.output
    no_out = CliRunner().invoke(main, ["infer", str(path), "--num-samples", "2"])
    assert no_out.exit_code == 2 and "--output FILE.npy" in no_out.output
