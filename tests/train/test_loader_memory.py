"""Peak memory of `archc train` over a JPEG folder read per batch does not grow with the folder ([data] in_memory =
false), and the model still learns (issue 20, "Done when": the test at small size; the figure at full size is
`benchmarks/bench_loader.py`).

One epoch on generated folders of N and 4N JPEGs (class = the image's colour, under noise: learnable in one epoch),
each run in its own process whose peak resident memory is read from os.wait4 (the largest process of the run's
tree: the trainer; its loader workers are its children). The growth from N to 4N must stay within 10% of the extra
decoded float32 bytes, plus a fixed tolerance: four evaluation batches of 256 decoded examples. Evaluation reads
a split in batches of 256 (archc.train.loader.LoaderSplit.eval_batch) and the run's test report in chunks of up to
1024 (archc.runtime.session.EVAL_BATCH): a split smaller than that is read in one smaller piece, so buffers in
flight (a worker's batch read ahead, the batch in use, the model's activations on it) are smaller at N than at 4N.
That bounded difference is not growth with the folder, so the split fractions keep it small: validation 20% (260
examples at N: full batches at both sizes), test 5% (65 vs 260 examples, one piece either way). The test split's
size is then too small to show in memory, so the causes found before are checked directly (splits_stay_lazy).

It can fail: with in_memory = true the same two runs grow by the whole extra decoded set and then some (the array,
the tensor made of it, the test split's copy): measured on this machine at 48x48 (1,500 vs 6,000 images), 423 MB
for 124 MB of extra decoded pixels (3.4x), against 12.6 MB read per batch; before the fix of from_arrays (the test
split was decoded whole), `archc infer`'s load_split ignoring [data] in_memory and the report running the test split
at once, the lazy run grew by 86% of the extra bytes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SIDE = 40                     # pixels: 3 x 40 x 40 float32 = 19,200 bytes per decoded example
N = 1300                      # and 4N = 5,200: the extra decoded bytes are 3,900 x 19,200 = 75 MB
CLASSES = ((200, 40, 40), (40, 200, 40), (40, 40, 200))
EXAMPLE_BYTES = 3 * SIDE * SIDE * 4
EVAL_BATCH = 256
TOLERANCE = 4 * EVAL_BATCH * EXAMPLE_BYTES  # 19.7 MB: see the module's docstring

SPEC = """archc = 1
[model]
name = "colours"
[inputs.image]
shape = [3, {side}, {side}]
[task]
kind = "classification"
[[layers]]
op = "conv2d"
out_channels = 8
kernel_size = 3
stride = 2
padding = 1
act = "relu"
[[layers]]
op = "adaptive_avg_pool2d"
output_size = 1
[[layers]]
op = "flatten"
[[layers]]
op = "linear"
out_features = {classes}
[train]
epochs = 1
batch_size = 64
optimizer = {{ name = "adamw", lr = 3e-3 }}
[data]
in_memory = {in_memory}
workers = 1
val_fraction = 0.2
test_fraction = 0.05
"""


def make_folder(folder: Path, n: int, seed: int = 0) -> Path:
    """n JPEGs in one sub-folder per class; class k is CLASSES[k] plus Gaussian noise (sd 40)."""
    rng = np.random.default_rng(seed)
    for k in range(len(CLASSES)):
        (folder / f"c{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k = i % len(CLASSES)
        pixels = np.clip(np.asarray(CLASSES[k]) + rng.normal(0, 40, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"c{k}" / f"{i:05d}.jpg", quality=90)
    return folder


def peak_rss_of_run(spec: Path, folder: Path, out: Path) -> int:
    """Train one epoch in a fresh process; its peak resident bytes (the largest process of its tree)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    with open(out.with_suffix(".stderr"), "w+b") as err:
        proc = subprocess.Popen([sys.executable, "-m", "archc.train", str(spec), "--data", f"images:{folder}",
                                 "--out", str(out), "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    assert proc.returncode == 0, text
    assert "per batch" in text, text  # the folder really was read per batch
    return usage.ru_maxrss * 1024  # Linux reports KiB


def splits_stay_lazy(model_path: Path, folder: Path) -> None:
    """The causes of growth found before, checked directly: every split of a source read per batch is a view that
    reads nothing (the test split was decoded whole), and `archc infer`'s reader of the run's test split honours
    the [data] in_memory the model records (it decoded a folder under the budget whole)."""
    from archc.data import load
    from archc.data.lazy import is_lazy
    from archc.runtime import Model
    from archc.runtime.evaluate import load_split

    ds = load(f"images:{folder}", task="classification", in_memory=False, channels=3, size=f"{SIDE}x{SIDE}")
    assert all(is_lazy(s.x) for s in (ds.train, ds.val, ds.test))
    data = load_split(Model.open(model_path, device="cpu"), f"images:{folder}", "test")
    assert all(is_lazy(x) for x in data.feeds.values()), data.feeds


def test_peak_memory_is_flat_in_the_folder_size_and_the_model_learns(tmp_path: Path) -> None:
    spec = tmp_path / "colours.toml"
    spec.write_text(SPEC.format(side=SIDE, classes=len(CLASSES), in_memory="false"))
    peaks = {}
    for n in (N, 4 * N):
        folder = make_folder(tmp_path / f"images{n}", n, seed=n)
        out = tmp_path / f"run{n}"
        peaks[n] = peak_rss_of_run(spec, folder, out)
        result = json.loads((out / "result.json").read_text())
        assert result["test"]["accuracy"] > 0.6, result["test"]  # chance is 1/3
        assert result["test"]["examples"] == round(0.05 * n)
        assert (out / "report.json").exists()  # the report read the lazy test split too
        if n == N:
            splits_stay_lazy(out / "model.onnx", folder)
    extra = 3 * N * EXAMPLE_BYTES
    growth = peaks[4 * N] - peaks[N]
    assert growth <= 0.10 * extra + TOLERANCE, (
        f"peak memory grew by {growth / 2**20:.1f} MiB from {N} to {4 * N} images ({growth / extra:.0%} of the "
        f"{extra / 2**20:.0f} MiB of extra decoded pixels): peaks {peaks}")
