"""`archc infer --input` image files: a PNG or JPEG file, a glob, a folder with or without class sub-folders, stray
files, upper-case extensions, channel and size conversion by the documented rule, --split all, the true label;
training's images: loader converts alike (same values)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image

from archc.cli import main
from archc.data import load
from archc.data.images import LUMA
from archc.runtime import Model

F32 = TensorProto.FLOAT


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def image_model(tmp_path: Path, c: int = 1, h: int = 4, w: int = 4, task: dict | None = None,
                preprocess: dict | None = None, name: str = "m") -> Path:
    """x [batch, c, h, w] → y [batch, c*h*w] (Flatten): the output is exactly what archc fed, after preprocessing.
    With a classification task, y = Flatten(x) @ W (K = 2 classes) holds logits."""
    x = helper.make_tensor_value_info("x", F32, ["batch", c, h, w])
    nodes = [helper.make_node("Flatten", ["x"], ["flat"])]
    inits = []
    if task is not None:
        weights = np.stack([np.linspace(-1, 1, c * h * w), np.linspace(1, -1, c * h * w)], axis=1).astype(np.float32)
        inits.append(helper.make_tensor("W", F32, weights.shape, weights.ravel()))
        nodes.append(helper.make_node("MatMul", ["flat", "W"], ["y"]))
        out_shape = ["batch", 2]
    else:
        nodes.append(helper.make_node("Identity", ["flat"], ["y"]))
        out_shape = ["batch", c * h * w]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", F32, out_shape)], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    meta = {"archc.inputs": {"x": {"shape": ["batch", c, h, w], "dtype": "float32"}},
            "archc.outputs": {"y": {"shape": out_shape, "dtype": "float32",
                                    "kind": "logits" if task else "values"}}}
    if task is not None:
        meta["archc.task"] = task
    if preprocess is not None:
        meta["archc.preprocess"] = {"x": preprocess}
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=json.dumps(v))
    path = tmp_path / f"{name}.onnx"
    onnx.save(m, str(path))
    return path


def save(path: Path, pixels: np.ndarray, **kw) -> np.ndarray:
    """Write uint8 pixels (H, W) or (H, W, C) with Pillow (format from the extension); what a reader decodes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kw)
    return np.asarray(Image.open(path))


def rgb(seed: int, h: int = 4, w: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def gray(seed: int, h: int = 4, w: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def fed(tmp_path: Path, model: Path, *args) -> tuple[np.ndarray, object]:
    """What the model received for `--input ...` (its Flatten output, written with -o out.npy) and the run."""
    out = tmp_path / "out.npy"
    r = run("infer", model, "--input", *args, "-o", out)
    assert r.exit_code == 0, r.output
    return np.load(out), r


def test_png_file_is_read_today_refused(tmp_path):
    """digit.png as --input: decoded, scaled to [0, 1] and fed as one example (main refused the .png type)."""
    px = save(tmp_path / "digit.png", gray(0))
    got, r = fed(tmp_path, image_model(tmp_path), tmp_path / "digit.png")
    np.testing.assert_array_equal(got, (px.astype(np.float32) / 255).reshape(1, 16))
    assert "1 example(s)" in r.stdout and "digit.png" in r.stdout  # the file column


def test_jpeg_upper_case_and_rgb_into_a_one_channel_model(tmp_path):
    """An RGB .JPG into a [1, 4, 4] model: ITU-R 601-2 luma of the decoded pixels (Pillow's JPEG decoder)."""
    px = save(tmp_path / "photo.JPG", rgb(1), quality=95).astype(np.float32) / 255
    got, r = fed(tmp_path, image_model(tmp_path), tmp_path / "photo.JPG")
    want = px @ np.asarray(LUMA, np.float32)
    np.testing.assert_allclose(got.reshape(4, 4), want, atol=1e-6)
    assert "RGB to gray (1)" in r.stderr


def test_gray_into_a_three_channel_model_and_rgba_alpha_dropped(tmp_path):
    px = save(tmp_path / "g.png", gray(2)).astype(np.float32) / 255
    got, _ = fed(tmp_path, image_model(tmp_path, c=3), tmp_path / "g.png")
    np.testing.assert_array_equal(got.reshape(3, 4, 4), np.stack([px] * 3))
    rgba = np.random.default_rng(3).integers(0, 256, (4, 4, 4), dtype=np.uint8)
    save(tmp_path / "a.png", rgba)
    got, r = fed(tmp_path, image_model(tmp_path, c=3), tmp_path / "a.png")
    np.testing.assert_array_equal(got.reshape(3, 4, 4), np.transpose(rgba[:, :, :3], (2, 0, 1)) / np.float32(255))
    assert "RGBA to RGB (1)" in r.stderr


def test_size_mismatch_is_resized_by_the_stated_rule(tmp_path):
    """A 6 x 5 image into a 4 x 4 model: Pillow's bilinear resize on float32 values, said on stderr."""
    px = save(tmp_path / "big.png", gray(4, 6, 5)).astype(np.float32) / 255
    got, r = fed(tmp_path, image_model(tmp_path), tmp_path / "big.png")
    want = np.asarray(Image.fromarray(px).resize((4, 4), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(got.reshape(4, 4), want, atol=1e-7)
    assert "6x5 resized to 4x4" not in r.stderr and "resized to 4x4 (1; Pillow bilinear" in r.stderr


def test_channels_without_a_rule_are_refused_with_the_expected_shape(tmp_path):
    save(tmp_path / "c.png", rgb(5))
    r = run("infer", image_model(tmp_path, c=2), "--input", tmp_path / "c.png")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "c.png: expected an image of 2 channel(s), received 3" in r.stderr
    # a model whose input is no image: refused naming its shape
    flat = tmp_path / "flat.onnx"
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", F32, ["batch", 16])],
                          [helper.make_tensor_value_info("y", F32, ["batch", 16])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(flat))
    r = run("infer", flat, "--input", tmp_path / "c.png")
    assert r.exit_code == 1
    assert "expected a model with one image input [batch, C, H, W] float32 to read image files, received 'x' " \
           "[batch, 16] float32" in r.stderr


def test_folder_glob_stray_files_and_normalization(tmp_path):
    """A folder without class sub-folders: every image predicted (sorted, upper-case extensions too), stray
    files skipped with a count; the model's recorded normalization still applies."""
    folder = tmp_path / "imgs"
    pixels = {name: save(folder / name, gray(i)) for i, name in enumerate(["a.png", "b.PNG", "c.jpeg"])}
    for stray in ("Thumbs.db", "notes.txt"):
        (folder / stray).write_bytes(b"not an image")
    (folder / ".DS_Store").write_bytes(b"\0")
    model = image_model(tmp_path, preprocess={"mean": 0.5, "std": 0.25})
    got, r = fed(tmp_path, model, folder)
    want = np.stack([(p.astype(np.float32) / 255 - 0.5) / 0.25 for p in pixels.values()]).reshape(3, 16)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert "skipped 2 non-image file(s): Thumbs.db, notes.txt" in r.stderr
    got, r = fed(tmp_path, model, str(folder / "*.png"))  # a glob (quoted in a shell): .PNG is not *.png there
    assert got.shape == (1, 16) and "a.png" in r.stdout
    got, _ = fed(tmp_path, model, str(folder / "*"))
    assert got.shape == (3, 16)


def test_corrupt_and_huge_images_are_one_located_error(tmp_path):
    folder = tmp_path / "imgs"
    save(folder / "ok.png", gray(0))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    r = run("infer", image_model(tmp_path), "--input", folder)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "broken.jpg: expected a readable image, received one that fails to decode" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    (folder / "broken.jpg").unlink()
    # 30000 x 30000 declared by a tiny file: refused from the header, before any pixel is decoded
    Image.new("L", (1, 1)).save(folder / "bomb.png")
    data = bytearray((folder / "bomb.png").read_bytes())
    import struct
    import zlib
    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (folder / "bomb.png").write_bytes(bytes(data))
    r = run("infer", image_model(tmp_path), "--input", folder)
    assert r.exit_code == 1
    assert "bomb.png: expected a readable image, received one that fails to decode (expected an image of 1 to " \
           "67,108,864 pixels (8192 x 8192), received a header declaring 30000 x 30000)" in r.stderr


def labelled_folder(root: Path, per_class: int = 1) -> Path:
    for k, cls in enumerate(["cat", "dog"]):
        for i in range(per_class):
            save(root / cls / f"{i}.png", rgb(10 * k + i, 6, 6))
    (root / "cat" / "Thumbs.db").write_bytes(b"x")
    return root


def test_folder_of_class_folders_runs_every_image_with_the_true_label(tmp_path):
    """Two images, two classes: both scored (main split the folder and scored one), each with its true label."""
    model = image_model(tmp_path, task={"kind": "classification", "labels": ["dog", "cat"]})
    folder = labelled_folder(tmp_path / "pets")
    r = run("infer", model, "--input", folder, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [rec["true"] for rec in data["records"]] == ["cat", "dog"]  # matched by name, not by folder order
    assert [rec["file"] for rec in data["records"]] == ["cat/0.png", "dog/0.png"]  # relative to the folder given
    assert 0 <= data["metrics"]["accuracy"] <= 1
    assert "skipped 1 non-image file(s): cat/Thumbs.db" in r.stderr
    r = run("infer", model, "--input", folder)
    assert "images:" in r.stdout and "every example, 2 examples: accuracy" in r.stdout
    assert r.stdout.splitlines()[0].split()[:4] == ["#", "file", "true", "label"]
    # the same folder as a source: --split all runs both, the default (test) the held-out one
    r = run("infer", model, "--input", f"images:{folder}", "--split", "all", "--json")
    assert len(json.loads(r.stdout)["records"]) == 2
    r = run("infer", model, "--input", f"images:{folder}", "--json")
    assert len(json.loads(r.stdout)["records"]) == 1


def test_class_folder_the_model_never_saw_is_refused(tmp_path):
    model = image_model(tmp_path, task={"kind": "classification", "labels": ["dog", "cat"]})
    folder = labelled_folder(tmp_path / "pets")
    save(folder / "cow" / "0.png", rgb(9, 6, 6))
    r = run("infer", model, "--input", folder)
    assert r.exit_code == 1 and "received 'cow' in the data, which the model never saw" in r.stderr


def test_split_all_runs_every_example_of_a_source(tmp_path):
    r = run("build", Path(__file__).resolve().parents[2] / "specs" / "digits_mlp.toml", "-o", tmp_path / "d.onnx")
    assert r.exit_code == 0, r.output
    r = run("infer", tmp_path / "d.onnx", "--input", "sklearn:digits", "--split", "all", "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["records"]) == 1797
    r = run("infer", tmp_path / "d.onnx", "--input", "sklearn:digits", "--split", "all", "--limit", "1")
    assert "sklearn:digits, every example, 1797 examples: accuracy" in r.stdout


def test_unlabelled_images_have_no_splits_and_no_report(tmp_path):
    save(tmp_path / "imgs" / "a.png", gray(0))
    model = image_model(tmp_path, task={"kind": "classification", "labels": ["a", "b"]})
    r = run("infer", model, "--input", tmp_path / "imgs", "--split", "test")
    assert r.exit_code == 1 and "expected --split all for unlabelled images" in r.stderr
    r = run("infer", model, "--input", tmp_path / "imgs", "--report", tmp_path / "rep")
    assert r.exit_code == 1 and "--report: expected labelled data" in r.stderr
    assert not (tmp_path / "rep").exists()


def test_training_loader_converts_as_infer_does(tmp_path):
    """The images: source with the spec's channels and size (what `archc train` fills in) yields the values infer
    feeds for the same files: one decode and one conversion rule."""
    folder = tmp_path / "pets"
    for k, cls in enumerate(["cat", "dog"]):
        save(folder / cls / "0.png", rgb(k, 6, 5))
        save(folder / cls / "1.JPG", gray(k + 5, 3, 3))
    ds = load(f"images:{folder}", channels=1, size="4x4", val_fraction=0, test_fraction=0)
    assert ds.example_shape == (1, 4, 4) and len(ds.train) == 4
    assert any("RGB to gray (2)" in n and "resized to 4x4 (4" in n for n in ds.notes)
    model = image_model(tmp_path, task={"kind": "classification", "labels": ["cat", "dog"]})
    from archc.runtime.files import read

    data = read(Model.open(model), str(folder), None)
    np.testing.assert_array_equal(data.feeds["x"], ds.train.x)
    np.testing.assert_array_equal(data.y, ds.train.y)
