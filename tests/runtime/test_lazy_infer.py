"""`archc infer --input images:DIR` over a folder past the in-memory budget: the examples stay lazy (archc.data.lazy)
and Model.run reads them a chunk at a time, checked per chunk; `--split all` joins train, val and test lazily.
Results equal the in-memory path's; peak memory does not grow with the folder (RSS measured in a subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image

import archc.data.lazy as lazy
from archc.cli import main
from archc.data.lazy import Lazy, chunks, concat
from archc.runtime import Model

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["ant", "bee", "cat"]


def classifier(path: Path, c: int, h: int, w: int, k: int = len(CLASSES)) -> Path:
    """x [batch, c, h, w] -> logits Flatten(x) @ W [batch, k], W fixed, labelled CLASSES[:k] (an archc export's
    metadata), with a per-channel preprocessing (so the chunks are preprocessed too)."""
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((c * h * w, k)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", c, h, w])
    nodes = [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "W"], ["y"])]
    init = [helper.make_tensor("W", TensorProto.FLOAT, weights.shape, weights.ravel())]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", k])],
                              init)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    meta = {"archc.inputs": {"x": {"shape": ["batch", c, h, w], "dtype": "float32"}},
            "archc.outputs": {"y": {"shape": ["batch", k], "dtype": "float32", "kind": "logits"}},
            "archc.task": {"kind": "classification", "labels": CLASSES[:k]},
            "archc.preprocess": {"x": {"mean": [0.5] * c, "std": [0.25] * c}},
            "archc.spec": {"data": {"val_fraction": 0.25, "test_fraction": 0.25, "split_seed": 3}}}
    for key, v in meta.items():
        m.metadata_props.add(key=key, value=json.dumps(v))
    onnx.save(m, str(path))
    return path


def folder(root: Path, per_class: int, size: int, fmt: str = "png") -> Path:
    """One sub-folder per class of random RGB images size x size."""
    rng = np.random.default_rng(1)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:05d}.{fmt}")
    return root


def infer(*args) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["infer", *map(str, args)])
    return r.exit_code, r.output


def force_lazy(mp: pytest.MonkeyPatch) -> None:
    """Every images: folder past the budget, chunks of 5 examples (8x8 RGB float32 = 768 bytes each), and a Lazy that
    refuses to be read whole: the run must go chunk by chunk."""
    mp.setattr(lazy, "IN_MEMORY_BYTES", 0)
    mp.setattr(lazy, "CHUNK_BYTES", 5 * 768)

    def whole(self, dtype=None, copy=None):
        raise AssertionError(f"{self!r} read whole")

    mp.setattr(Lazy, "__array__", whole)


@pytest.fixture
def forced_lazy(monkeypatch):
    force_lazy(monkeypatch)


@pytest.mark.parametrize("split", ["test", "all"])
def test_lazy_infer_equals_in_memory(tmp_path, monkeypatch, split):
    """The same outputs, records, metrics and report, read whole or a chunk at a time (--split all: lazily
    concatenated train, val and test)."""
    model = classifier(tmp_path / "m.onnx", 3, 8, 8)
    data = folder(tmp_path / "pets", per_class=7, size=8)
    args = ["--input", f"images:{data}", "--split", split, "--json"]
    code, whole = infer(model, *args, "-o", tmp_path / "whole.npy", "--report", tmp_path / "r1")
    assert code == 0, whole
    with monkeypatch.context() as mp:
        force_lazy(mp)
        code, chunked = infer(model, *args, "-o", tmp_path / "chunked.npy", "--report", tmp_path / "r2")
    assert code == 0, chunked
    assert "per batch" in chunked  # the note: this run really was lazy
    a, b = np.load(tmp_path / "whole.npy"), np.load(tmp_path / "chunked.npy")
    assert a.shape == b.shape == (21 if split == "all" else 5, 3)  # 5: the test quarter of 21 (split as trained)
    np.testing.assert_array_equal(a, b)
    assert _json_tail(whole) == _json_tail(chunked)
    r1, r2 = (json.loads((tmp_path / r / "report.json").read_text()) for r in ("r1", "r2"))
    r1.pop("title", None), r2.pop("title", None)
    assert r1 == r2


def test_lazy_unlabelled_images_equal_in_memory(tmp_path, monkeypatch):
    """A folder without class sub-folders (and a glob): predicted a chunk at a time, the same records and outputs."""
    model = classifier(tmp_path / "m.onnx", 3, 8, 8)
    data = folder(tmp_path / "pets", per_class=4, size=12)  # 12x12 files: resized to the model's 8x8 as read
    loose = tmp_path / "loose"
    loose.mkdir()
    for f in sorted(data.glob("*/*.png")):
        f.rename(loose / f"{f.parent.name}-{f.name}")
    for given in (loose, f"{loose}/*.png"):
        code, whole = infer(model, "--input", given, "--json", "-o", tmp_path / "whole.npy")
        assert code == 0, whole
        with monkeypatch.context() as mp:
            force_lazy(mp)
            code, chunked = infer(model, "--input", given, "--json", "-o", tmp_path / "chunked.npy")
        assert code == 0, chunked
        assert "a chunk at a time" in chunked
        np.testing.assert_array_equal(np.load(tmp_path / "whole.npy"), np.load(tmp_path / "chunked.npy"))
        assert _json_tail(whole) == _json_tail(chunked)
        first = "ant-00000.png" if given == loose else f"{loose}/ant-00000.png"  # a glob's match as it spells it
        assert len(_json_tail(chunked)) == 12 and _json_tail(chunked)[0]["file"] == first


def _json_tail(output: str) -> Any:
    """The --json document printed after any note lines."""
    lines = output.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line[:1] in "[{")
    return json.loads("".join(lines[first:]))


def test_lazy_chunk_errors_name_the_file_and_the_example(tmp_path, forced_lazy):
    """A file that fails to decode in a later chunk is named; a per-chunk input check counts examples from the start
    of the whole input, not of the chunk."""
    model = classifier(tmp_path / "m.onnx", 3, 8, 8)
    data = folder(tmp_path / "pets", per_class=7, size=8)
    (data / "cat" / "00006.png").write_bytes(b"not a png")
    code, out = infer(model, "--input", f"images:{data}", "--split", "all")
    assert code == 1, out
    assert "cat/00006.png" in out and "Traceback" not in out

    m = Model.open(model, device="cpu")
    x = np.zeros((12, 3, 8, 8), dtype=np.float32)
    x[9, 1, 2, 3] = np.nan
    rows = Lazy(_Rows(x), (3, 8, 8), np.float32)
    with pytest.raises(Exception) as e:
        m.run({"x": rows}, batch_size=2)
    assert "example 9, feature (1, 2, 3)" in str(e.value)


class _Rows:
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def read(self, i):
        return self.x[i]

    def where(self, i):
        return f"row {i}"


def test_concat_and_chunks():
    """Views of one reader join into one view; others through a Concat reader; arrays concatenate. Chunks cover
    every example once, whole batches where a batch fits."""
    x = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    whole = Lazy(_Rows(x), (2,), np.float32)
    a, b = whole.select(np.array([7, 1])), whole.select(np.array([4]))
    joined = concat([a, b])
    assert joined.reader is whole.reader and joined.index.tolist() == [7, 1, 4]
    other = Lazy(_Rows(x[:3] + 100), (2,), np.float32)
    mixed = concat([a, other, x[5:6]])
    assert len(mixed) == 6
    np.testing.assert_array_equal(mixed[:], np.concatenate([x[[7, 1]], x[:3] + 100, x[5:6]]))
    assert mixed.where(2) == "row 0"
    np.testing.assert_array_equal(concat([x[:2], x[2:]]), x)
    spans = chunks(1000, 100, batch_size=64, chunk_bytes=10_000)  # 100 per chunk -> 64, a whole batch
    assert spans[0] == (0, 64) and spans[-1][1] == 1000
    assert all(s1 == e0 for (_, e0), (s1, _) in zip(spans, spans[1:]))
    assert chunks(5, 10**9) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]


# Peak RSS of `archc infer --split all` over a folder past the budget (budget 0: every folder is lazy).
PEAK = """
import resource, sys
import archc.data.lazy as lazy
lazy.IN_MEMORY_BYTES = int(sys.argv[1])
lazy.CHUNK_BYTES = 16 << 20  # both folders run in several chunks
from archc.cli import main
try:
    main(sys.argv[2:], standalone_mode=False)
finally:
    print("peak_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def peak_kib(model: Path, data: Path, budget: int, out: Path) -> int:
    out.parent.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", PEAK, str(budget), "infer", str(model), "--input", f"images:{data}",
                           "--split", "all", "--device", "cpu", "-o", str(out), "--report", str(out.parent / "rep")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stderr.rsplit("peak_kib", 1)[1].split()[0])


def test_lazy_infer_memory_flat(tmp_path):
    """Peak RSS at 4N images grows by at most 10% of the extra decoded pixels over N (decoding everything would
    grow by several times them: the decoded array, its preprocessed copy, ...)."""
    size, n = 96, 200  # per class: 600 and 2,400 images of 3x96x96 (110 KiB decoded each)
    model = classifier(tmp_path / "m.onnx", 3, size, size)
    small = folder(tmp_path / "small", per_class=n, size=size, fmt="jpg")
    large = folder(tmp_path / "large", per_class=4 * n, size=size, fmt="jpg")
    peaks = [peak_kib(model, d, 0, tmp_path / f"out-{d.name}" / "out.npy") for d in (small, large)]
    extra = 3 * 3 * n * 3 * size * size * 4 / 1024  # KiB decoded
    assert peaks[1] - peaks[0] <= 0.10 * extra, (peaks, extra)
