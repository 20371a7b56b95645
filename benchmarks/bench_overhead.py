"""Figure 18: the seconds an `archc train` run spends outside its training loop (start-up and imports, reading the
data, building the model, the export check, the final export and its parity check, the test report) against a
hand-written PyTorch script's (its imports, data reading, normalization, saving the weights), for the MNIST-sized
reference model (specs/digit_classifier.toml, 784-256-128-10) on a small MNIST-format set.

Both sides are fresh processes, one torch thread each, run round-robin (order alternating each round) with the same
data, epochs, batch size and optimizer; outside = the process's wall time minus the seconds of its training epochs
(archc: metrics.jsonl's per-epoch `seconds`, the steps of an epoch; the twin: the same span around its steps).
Medians over the rounds; no goal is set (issue 21 asks for the figure).
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

import common

FIGURE = 18
KEY = "overhead"
TITLE = "Time outside the training loop: archc train vs a hand-written script"
A, B = "archc train (s)", "hand-written (s)"
SPEC = "digit_classifier"
TRAIN, TEST, EPOCHS = 6000, 1000, 2  # a small MNIST-format set: a few seconds of training on one core

# The hand-written twin: what one writes without archc (benchmarks/handwritten.py's MLP, inline, so its imports are
# torch's and numpy's alone). Prints its epochs' seconds as JSON.
TWIN = r'''
import json, struct, sys, time
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)
folder, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])


def idx(path):
    data = open(path, "rb").read()
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


x = idx(f"{folder}/train-images-idx3-ubyte").astype(np.float32)[:, None] / 255
y = idx(f"{folder}/train-labels-idx1-ubyte").astype(np.int64)
xt = idx(f"{folder}/t10k-images-idx3-ubyte").astype(np.float32)[:, None] / 255
yt = idx(f"{folder}/t10k-labels-idx1-ubyte").astype(np.int64)
order = np.random.default_rng(0).permutation(len(x))
val, train = order[:len(x) // 10], order[len(x) // 10:]
mean, std = x[train].mean(), x[train].std()
norm = lambda a: torch.from_numpy((a - mean) / std)
xtr, ytr, xv, yv = norm(x[train]), torch.from_numpy(y[train]), norm(x[val]), torch.from_numpy(y[val])


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.logits = nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.logits(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


torch.manual_seed(0)
model = MLP()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
loop, best, best_acc = [], None, -1.0
for epoch in range(epochs):
    start = time.perf_counter()
    model.train()
    perm = torch.randperm(len(xtr))
    for i in range(0, len(perm), 128):
        b = perm[i:i + 128]
        loss = F.cross_entropy(model(xtr[b]), ytr[b], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    loop.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    if acc > best_acc:
        best_acc, best = acc, {k: v.clone() for k, v in model.state_dict().items()}
model.load_state_dict(best)
torch.save(best, out)
with torch.no_grad():
    test = (model(norm(xt)).argmax(1) == torch.from_numpy(yt)).float().mean().item()
print(json.dumps({"loop": loop, "test_accuracy": test}))
'''


def write_idx(folder: Path, seed: int = 0) -> Path:
    """A learnable MNIST-format set (train and t10k IDX files): noise with a bright band at each class's rows."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", TRAIN), ("t10k", TEST)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = (rng.random((n, 28, 28)) * 80).astype(np.uint8)
        for k in range(10):
            x[y == k, 2 * k:2 * k + 6] = 200
        for kind, a, magic in (("images", x, 0x803), ("labels", y, 0x801)):
            with open(folder / f"{prefix}-{kind}-idx{a.ndim}-ubyte", "wb") as f:
                f.write(struct.pack(">I", magic) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())
    return folder


def _spec(folder: Path, data: Path) -> Path:
    """specs/digit_classifier.toml on the set, for EPOCHS epochs (as JSON: a spec may be either)."""
    spec = tomllib.loads(common.spec_path(SPEC).read_text())  # type: ignore[union-attr]
    spec["train"]["epochs"] = EPOCHS
    spec["data"] = {"source": f"idx:{data}"}
    path = folder / "digit_classifier.json"
    path.write_text(json.dumps(spec))
    return path


def _archc(spec: Path, out: Path) -> tuple[float, float]:
    """(wall, training-loop seconds) of one fresh `archc train` process."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", "from archc.cli import main; main()", "train", str(spec), "--out", str(out),
           "--threads", "1", "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=common.ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"archc train failed ({proc.returncode}): {proc.stderr.decode()[-300:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return wall, sum(r["seconds"] for r in rows if "seconds" in r)


def _twin(script: Path, data: Path, out: Path) -> tuple[float, float]:
    """(wall, training-loop seconds) of one fresh hand-written process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), str(data), str(out), str(EPOCHS)], capture_output=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"hand-written twin failed ({proc.returncode}): {proc.stderr.decode()[-300:]}")
    return wall, sum(json.loads(proc.stdout)["loop"])


def write_pngs(folder: Path, data: Path, n: int) -> Path:
    """The first `n` training images of the IDX set as an images: folder of 28x28 grayscale PNGs, one sub-folder
    per class ("0".."9", the spec's labels)."""
    from PIL import Image

    def idx(path: Path) -> np.ndarray:
        raw = path.read_bytes()
        dims = struct.unpack(f">{raw[3]}I", raw[4:4 + 4 * raw[3]])
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)
    x, y = idx(data / "train-images-idx3-ubyte")[:n], idx(data / "train-labels-idx1-ubyte")[:n]
    for k in range(10):
        (folder / str(k)).mkdir(parents=True, exist_ok=True)
    for i, (img, k) in enumerate(zip(x, y)):
        Image.fromarray(img).save(folder / str(k) / f"{i:05d}.png")
    return folder


def report_reads(model_path: Path, sources: dict[str, str], rounds: int) -> list[dict]:
    """Rows: what the run's test report costs to get its split now (read_split: the split training read, nothing
    read again) against before (load_split: the source read again, as `archc infer --report` reads it), per source;
    in this process, interleaved."""
    from archc.data import load
    from archc.runtime import Model
    from archc.runtime.evaluate import load_split, read_split
    from archc.tasks.base import data_settings, image_options
    from archc.train.dataset import held_test

    model = Model.open(model_path, device="cpu")
    rows = []
    for what, source in sources.items():
        settings = data_settings(model)
        held = held_test(load(source, task="classification", defaults=image_options(model), **settings))
        t = common.interleave({"now": lambda: read_split(model, source, held),
                               "before": lambda: load_split(model, source)}, rounds, inner=1, warmup=1)
        n = len(held.test)
        rows.append(common.row(FIGURE, f"the report's test split ({n:,} examples), {what}: as training read it "
                                       "(now) vs the source read again (before)", common.median(t["now"]),
                               common.median(t["before"]), unit="s",
                               ratio=common.paired_ratio(t["now"], t["before"]),
                               note=f"archc.runtime.evaluate.read_split vs load_split; {rounds} rounds"))
    return rows


def _imports(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=common.ROOT)
    return time.perf_counter() - start


def run(quick: bool = False) -> tuple[list[dict], str]:
    rounds = 1 if quick else 5
    work = common.workdir() / "overhead"
    data = write_idx(work / "mnist")
    spec = _spec(work, data)
    script = work / "twin.py"
    script.write_text(TWIN)
    runs: dict[str, list[tuple[float, float]]] = {"archc": [], "hand": []}
    imports: dict[str, list[float]] = {"archc": [], "hand": []}
    sides = {"archc": lambda: runs["archc"].append(_archc(spec, work / "run")),
             "hand": lambda: runs["hand"].append(_twin(script, data, work / "twin.pt")),
             "archc_imports": lambda: imports["archc"].append(_imports("import archc.cli, archc.train.loop")),
             "hand_imports": lambda: imports["hand"].append(_imports("import numpy, torch"))}
    common.interleave(sides, rounds, inner=1, warmup=0 if quick else 1)
    rounds_done = len(runs["hand"])
    out = {k: [w - loop for w, loop in v[-rounds:]] for k, v in runs.items()}
    wall = {k: common.median([w for w, _ in v[-rounds:]]) for k, v in runs.items()}
    loop = {k: common.median([t for _, t in v[-rounds:]]) for k, v in runs.items()}
    imp = {k: common.median(v[-rounds:]) for k, v in imports.items()}
    a, b = common.median(out["archc"]), common.median(out["hand"])
    rows = [
        common.row(FIGURE, f"outside the training loop: {SPEC} ({TRAIN:,} + {TEST:,} 28x28 images, {EPOCHS} epochs, "
                           "1 thread)", a, b, unit="s", ratio=common.paired_ratio(out["archc"], out["hand"]),
                   note=f"whole process {wall['archc']:.2f} s vs {wall['hand']:.2f} s; training epochs "
                        f"{loop['archc']:.2f} s vs {loop['hand']:.2f} s; {rounds} rounds"),
        common.row(FIGURE, "of which imports (`import archc.cli, archc.train.loop` vs `import numpy, torch`)",
                   imp["archc"], imp["hand"], unit="s", note="fresh processes, same rounds"),
    ]
    pngs = write_pngs(work / "pngs", data, 200 if quick else 2000)
    rows += report_reads(work / "run" / "model.onnx", {f"idx: ({TRAIN:,} + {TEST:,} images)": f"idx:{data}",
                                                       "images: (a folder of 28x28 PNGs, decoded in memory)":
                                                       f"images:{pngs}"}, 3 if quick else 7)
    details = (f"Command: `.venv/bin/python benchmarks/run.py --only {KEY}`. Each round runs `archc train "
               f"{SPEC}.json --threads 1 --quiet` (the spec on an idx: folder of {TRAIN:,} training and {TEST:,} test "
               f"images, {EPOCHS} epochs) and the hand-written script (benchmarks/bench_overhead.py's TWIN: numpy "
               "reads the IDX files, normalizes, trains the same MLP with AdamW and label smoothing, keeps the best "
               "epoch's weights, saves them with torch.save, scores the test split) as fresh processes, alternating "
               "which goes first; outside = wall time minus the training epochs' seconds. archc's outside time also "
               "holds what the script does not do: validating the spec, the export check before training, the "
               "ONNX export with its parity check against torch, the test report (report.json, report.png), curves.png "
               f"and checkpoints. {rounds_done} rounds measured after {rounds_done - rounds} warm-up. The last "
               "rows time, in this process, what the run's test report does to get its split since issue 21 "
               "(the split training read, `read_split`) against what it did before (the source read again, "
               "`load_split`, as `archc infer --report` still does).")
    return rows, details
