"""`archc export RUN_DIR --pixels` (archc.export.pixels): an image classifier trained here with `[data] normalize =
true` is exported to take uint8 [batch, H, W, C] pixels with /255, the layout and mean/std in the graph; README's
bare ONNX Runtime client (Pillow + numpy + onnxruntime) runs as written on a generated image and gets the outputs
`archc infer` gets; `archc infer` does not normalize twice; model.onnx is left as it was; a model without an image
input is refused in one line."""
from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
SIZE = 16


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_images(folder: Path, n: int = 36, classes: int = 3, seed: int = 0) -> Path:
    """PNG class folders of RGB SIZE x SIZE images, each class tinting its own channel over noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        k = i % classes
        pixels = rng.integers(0, 120, (SIZE, SIZE, 3))
        pixels[:, :, k] += 120
        (folder / f"c{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"c{k}" / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run folder of a tiny CNN trained one epoch on normalized RGB images."""
    import torch

    from archc.train import api

    tmp = tmp_path_factory.mktemp("pixels")
    images = make_images(tmp / "images")
    spec = {"archc": 1, "model": {"name": "cnn"}, "inputs": {"image": {"shape": [3, SIZE, SIZE]}},
            "task": {"kind": "classification"},
            "layers": [{"op": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "act": "relu"},
                       {"op": "global_avg_pool"}, {"op": "linear", "out_features": 3}],
            "train": {"epochs": 1, "batch_size": 8, "optimizer": {"name": "adam", "lr": 1e-2}},
            "data": {"source": f"images:{images}", "val_fraction": 0.25, "test_fraction": 0.25, "normalize": True}}
    (tmp / "cnn.json").write_text(json.dumps(spec))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        api.run(tmp / "cnn.json", out=tmp / "run", quiet=True)
    finally:
        torch.set_num_threads(threads)
    return tmp / "run"


@pytest.fixture(scope="module")
def exported(trained) -> tuple[Path, str]:
    r = run("export", trained, "--pixels")
    assert r.exit_code == 0, r.output
    return trained / "model-pixels.onnx", r.output


def meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def readme_snippet() -> str:
    """The python block of README's "An image ONNX that takes pixels" subsection."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### An image ONNX that takes pixels"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def infer_outputs(model: Path, image: Path, tmp: Path) -> np.ndarray:
    """The logits `archc infer MODEL --input IMAGE` computes (written with -o out.npz)."""
    out = tmp / f"{model.stem}.npz"
    r = run("infer", model, "--input", image, "-o", out)
    assert r.exit_code == 0, r.output
    with np.load(out) as z:
        floats = [z[k] for k in z.files if z[k].dtype.kind == "f" and z[k].ndim == 2]
    assert len(floats) == 1, "expected one 2-D float output (the logits)"
    return floats[0]


def test_the_file_takes_uint8_pixels_and_the_graph_normalizes(exported, trained):
    path, output = exported
    assert "takes pixels: 'image' uint8 [batch, 16, 16, 3] (/255, NHWC to NCHW, mean/std in the graph)" in output
    model = onnx.load(str(path))
    (inp,) = model.graph.input
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", SIZE, SIZE, 3]
    m = meta(path)
    assert "image" not in json.loads(m["archc.preprocess"])  # the graph normalizes: archc infer must not again
    plain = json.loads(meta(trained / "model.onnx")["archc.preprocess"])["image"]
    record = json.loads(m["archc.pixels"])
    assert record["mean"] == pytest.approx(plain["mean"]) and record["std"] == pytest.approx(plain["std"])
    assert json.loads(m["archc.inputs"]) == {"image": {"shape": ["batch", SIZE, SIZE, 3], "dtype": "uint8"}}
    # model.onnx is left as it is: its float input, its preprocess entry
    (plain_input,) = onnx.load(str(trained / "model.onnx")).graph.input
    assert plain_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_readme_client_gets_what_archc_infer_gets(exported, trained, tmp_path, monkeypatch):
    """The README block, run as written on a generated PNG, against `archc infer` on both files."""
    path, _ = exported
    folder = tmp_path / "client"
    folder.mkdir()
    (folder / "model-pixels.onnx").write_bytes(path.read_bytes())
    pixels = np.random.default_rng(7).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "photo.png")
    code = readme_snippet()
    assert "archc" not in re.sub(r"#.*", "", code).replace("archc.task", "")  # no archc import, no archc code
    namespace: dict = {}
    out = io.StringIO()
    monkeypatch.chdir(folder)
    with redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), namespace)
    printed = out.getvalue().strip().splitlines()
    assert printed[0] == "image tensor(uint8) ['batch', 16, 16, 3]"
    client = namespace["logits"]
    by_pixels = infer_outputs(path, folder / "photo.png", tmp_path)
    by_plain = infer_outputs(trained / "model.onnx", folder / "photo.png", tmp_path)
    np.testing.assert_allclose(client, by_pixels, atol=1e-5, rtol=0)
    np.testing.assert_allclose(by_pixels, by_plain, atol=1e-5, rtol=0)  # normalized once, not twice
    labels = json.loads(meta(path)["archc.task"])["labels"]
    assert printed[-1] == labels[int(by_plain.argmax(axis=1)[0])]


def test_archc_infer_scores_an_images_source_alike(exported, trained):
    """An images: source's test split scored by both files: the same accuracy (nothing normalized twice)."""
    path, _ = exported
    source = "images:" + json.loads((trained / "spec.json").read_text())["data"]["source"].split(":", 1)[1]
    scores = []
    for model in (path, trained / "model.onnx"):
        r = run("infer", model, "--input", source, "--json")
        assert r.exit_code == 0, r.output
        scores.append(json.loads(r.stdout)["metrics"])
    assert scores[0] == pytest.approx(scores[1])


def test_a_model_without_an_image_input_is_refused_in_one_line():
    """wrap() on a [batch, 8] model: one ExportError naming what it expected and received."""
    from onnx import TensorProto, helper

    from archc.errors import ExportError
    from archc.export.pixels import wrap

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    core = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    with pytest.raises(ExportError) as e:
        wrap(core)
    assert e.value.message == ("--pixels: expected a model with one image input float32 [batch, C, H, W] of fixed "
                               "C, H and W, received 'x' ['batch', 8]")


def test_lazy_images_are_handed_over_as_pixels_a_chunk_at_a_time(exported, trained, tmp_path, monkeypatch):
    """Past the in-memory budget (forced: budget 0, chunks of 5 images, a Lazy that refuses to be read whole), a
    labelled images: folder and an unlabelled folder stay lazy for the pixel file too: the plain file's outputs."""
    from archc.data import lazy
    from archc.data.lazy import Lazy

    path, _ = exported
    images = Path(json.loads((trained / "spec.json").read_text())["data"]["source"].split(":", 1)[1])
    loose = tmp_path / "loose"
    loose.mkdir()
    for f in sorted(images.glob("c1/*.png"))[:7]:
        loose.joinpath(f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(lazy, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(lazy, "CHUNK_BYTES", 5 * SIZE * SIZE * 3)

    def whole(self, dtype=None, copy=None):
        raise AssertionError(f"{self!r} read whole")

    monkeypatch.setattr(Lazy, "__array__", whole)
    for given in ([f"images:{images}", "--split", "all"], [loose]):
        got = []
        for model in (path, trained / "model.onnx"):
            out = tmp_path / f"{model.stem}.npz"
            r = run("infer", model, "--input", *given, "-o", out)
            assert r.exit_code == 0, r.output
            assert "a chunk at a time" in r.output or "per batch" in r.output  # really lazy
            with np.load(out) as z:
                got.append([z[k] for k in z.files if z[k].dtype.kind == "f" and z[k].ndim == 2][0])
        assert got[0].shape == (36 if len(given) == 3 else 7, 3)
        np.testing.assert_allclose(got[0], got[1], atol=1e-5, rtol=0)


def test_export_pixels_of_a_model_without_an_image_input_is_one_line_exit_1(tmp_path):
    """A run of an MLP on 8 features: `archc export --pixels` says what it expected and received; nothing written."""
    from archc.train import api

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(40, 8)).astype(np.float32), y=rng.integers(0, 2, 40))
    spec = {"archc": 1, "model": {"name": "mlp"}, "inputs": {"x": {"shape": [8]}}, "task": {"kind": "classification"},
            "layers": [{"op": "linear", "out_features": 2}], "train": {"epochs": 1, "batch_size": 8},
            "data": {"source": f"npz:{tmp_path / 'd.npz'}", "normalize": True}}
    (tmp_path / "mlp.json").write_text(json.dumps(spec))
    api.run(tmp_path / "mlp.json", out=tmp_path / "run", quiet=True)
    r = run("export", tmp_path / "run", "--pixels")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.strip() == ("error: --pixels: expected a model with one image input float32 [batch, C, H, W] of "
                                "fixed C, H and W, received 'x' ['batch', 8] (export it without --pixels)")
    assert not (tmp_path / "run" / "model-pixels.onnx").exists()


def test_quantize_keeps_the_pixel_front_in_float32(exported, tmp_path):
    """`archc quantize --fp16`: the network in float16, the front's nodes as they were (float32 constants)."""
    path, _ = exported
    r = run("quantize", path, "--fp16", "-o", tmp_path / "f16.onnx")
    assert r.exit_code == 0, r.output
    before, after = (onnx.load(str(p)) for p in (path, tmp_path / "f16.onnx"))
    front = [n for n in before.graph.node if n.name.startswith("archc_pixels/")]
    assert [n for n in after.graph.node if n.name.startswith("archc_pixels/")] == front
    assert {n.attribute[0].t.data_type for n in front if n.op_type == "Constant"} == {onnx.TensorProto.FLOAT}
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in after.graph.initializer)  # the network


def test_the_network_reads_what_archc_infer_feeds_the_plain_file_bit_for_bit(exported, trained):
    """The front's output (archc_pixels/normalized) on 8-bit images equals model.onnx's checked and preprocessed
    feed of the same images as archc reads them (v / 255, then (x - mean) / std): identical float32."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from archc.export.pixels import NORMALIZED
    from archc.runtime import Model

    path, _ = exported
    model = onnx.load(str(path))
    model.graph.output.append(helper.make_tensor_value_info(NORMALIZED, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(3).integers(0, 256, (32, SIZE, SIZE, 3), dtype=np.uint8)
    (front,) = sess.run([NORMALIZED], {"image": pixels})
    floats = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)
    fed = Model.open(trained / "model.onnx", device="cpu").check({"image": floats})["image"]
    assert fed.dtype == front.dtype == np.float32 and not np.array_equal(fed, floats)  # normalized
    np.testing.assert_array_equal(front, fed)


@pytest.mark.parametrize("preprocess", [None, {"mean": 0.25, "std": 0.5}, {"mean": [0.3], "std": [2.0]}])
def test_a_gray_model_with_one_or_no_statistics(preprocess):
    """wrap() of a hand-built gray [batch, 1, 4, 5] core (Flatten): uint8 [batch, 4, 5, 1] in, the values archc
    feeds out (v / 255, then (x - mean) / std when the run normalized; no Sub/Div nodes when it did not)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from archc.export.pixels import reference, wrap

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 20])
    core = helper.make_model(helper.make_graph([helper.make_node("Flatten", ["x"], ["y"])], "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])
    core.ir_version = 9
    if preprocess is not None:
        core.metadata_props.add(key="archc.preprocess", value=json.dumps({"x": preprocess}))
    model, record = wrap(core)
    onnx.checker.check_model(model, full_check=True)
    assert record["shape"] == ["batch", 4, 5, 1] and record["channels"] == "gray"
    assert ("Sub" in {n.op_type for n in model.graph.node}) == (preprocess is not None)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 4, 5, 1), dtype=np.uint8)
    (got,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": pixels})
    want = pixels.reshape(3, 20).astype(np.float32) / np.float32(255)
    if preprocess is not None:
        want = (want - np.float32(np.ravel(preprocess["mean"])[0])) / np.float32(np.ravel(preprocess["std"])[0])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, reference(pixels, record).reshape(3, 20))
