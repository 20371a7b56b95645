"""archc.train.loader end to end through `archc train` on a generated JPEG folder read per batch: the same run with
or without loader workers, and in memory; --nproc 2 each rank reading its share; a corrupt image and a worker killed
by the OS as clear errors; every [data.augment] transform training and never reaching the exported graph."""
from __future__ import annotations

import json
import os
import sys
import time
import signal
import subprocess

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file

import archc.train as train
from archc.data import load
from archc.train.batches import epoch_order


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoint.safetensors")


def _rows(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "samples_per_s")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_workers_and_in_memory_train_bit_identically(h, tmp_path):
    images = h.make_images(tmp_path / "img", n=48)
    runs = {}
    for name, data in (("w0", {"workers": 0}), ("w2", {"workers": 2}), ("mem", {"in_memory": True})):
        spec = h.make_image_spec(tmp_path / f"{name}.json", images, data=data)
        result = train.run(spec, out=tmp_path / name, quiet=True, device="cpu")
        runs[name] = (_weights(tmp_path / name), _rows(tmp_path / name), result.test)
    w0, w2, mem = runs["w0"], runs["w2"], runs["mem"]
    assert _same(w0[0], w2[0]) and _same(w0[0], mem[0])
    assert w0[1] == w2[1] == mem[1] and len(w0[1]) == 2
    assert w0[2] == w2[2] == mem[2]
    assert w0[1][-1]["train_loss"] < w0[1][0]["train_loss"]  # it learns


def _split(images, split: str = "train", split_seed: int = 0):
    return getattr(load(f"images:{images}", val_fraction=0.25, test_fraction=0.25, seed=split_seed,
                        in_memory=False, channels=3, size="16x16"), split).x


def _train_files(images, positions_in_epoch0: slice, seed: int = 0, split_seed: int = 0) -> list[str]:
    """Files of the training split that epoch 1 reads at these positions of its order."""
    train_x = _split(images, "train", split_seed)
    order = epoch_order(len(train_x), seed, 0)[positions_in_epoch0]
    return [train_x.reader.files[int(train_x.index[int(p)])] for p in order]


@pytest.mark.parametrize("garbage", ["truncated", "bytes"])
def test_a_corrupt_image_stops_the_run_naming_it_and_keeps_the_checkpoint(h, tmp_path, garbage):
    images = h.make_images(tmp_path / "img [/1]", n=48)  # '[/1]': rich markup (a closing tag) if printed as such
    bad = _train_files(images, slice(8, 16))[3]  # in the second batch of epoch 1 (batches of 8)
    data = (images / bad).read_bytes()
    (images / bad).write_bytes(data[:len(data) // 3] if garbage == "truncated" else b"\xff\xd8not a jpeg at all")
    spec = h.make_image_spec(tmp_path / "s.json", images, data={"workers": 2}, train={"checkpoint_every": 1})
    out = tmp_path / "run"
    proc = subprocess.run(h.cmd(str(spec), "--out", str(out), "--device", "cpu"), env=h.env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert bad in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert json.loads((out / "train_state.json").read_text())["step"] == 1  # the one step before it
    assert load_file(out / "checkpoint.safetensors")  # readable
    if garbage == "truncated":  # fixed: the run resumes from its checkpoint and ends (bit-identically to an
        (images / bad).write_bytes(data)  # uninterrupted run: tests/train/test_sigkill.py)
        resumed = subprocess.run(h.cmd(str(spec), "--out", str(out), "--device", "cpu", "--quiet", "--resume"),
                                 env=h.env(), capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert json.loads((out / "result.json").read_text())["epochs_run"] == 2


def test_skip_leaves_a_corrupt_image_out_and_counts_it(h, tmp_path):
    images = h.make_images(tmp_path / "img [/1]", n=48)
    bad = _train_files(images, slice(0, 24))[5]
    (images / bad).write_bytes(b"garbage")
    val = _split(images, "val")
    bad_val = val.reader.files[int(val.index[2])]
    (images / bad_val).write_bytes(b"garbage")
    spec = h.make_image_spec(tmp_path / "s.json", images, data={"workers": 2, "on_error": "skip", "normalize": True})
    proc = subprocess.run(h.cmd(str(spec), "--out", str(tmp_path / "run"), "--device", "cpu"), env=h.env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = proc.stdout + proc.stderr
    assert said.count("skipped 1 unreadable example(s) this epoch") == 2, said[-2000:]  # once per epoch
    assert "normalization statistics leave out 1 unreadable example(s)" in said, said[-2000:]  # read up front
    assert said.count("skipped 1 unreadable example(s) of the validation split") == 2 and bad_val in said
    assert "no test split report" in said  # the report reads the whole folder again: a note, not a failure
    assert bad in said and "Traceback" not in said
    assert any(line.startswith("data images:") and "img [/1]" in line for line in said.splitlines())  # as text
    assert "[bold]" not in said and "cnn (" in said  # the markup of the header's first line is still markup


def _children(pid: int) -> list[int]:
    try:
        return [int(k) for k in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_a_worker_killed_by_the_os_is_reported_not_waited_on(h, tmp_path):
    images = h.make_images(tmp_path / "img", n=48)
    spec = h.make_image_spec(tmp_path / "s.json", images, data={"workers": 2}, train={"epochs": 500})
    proc = subprocess.Popen(h.cmd(str(spec), "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"),
                            env=h.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(proc.pid)) < 2:  # the loader's persistent workers
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.01)
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)  # not a hang
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, err[-2000:]
    assert "loader worker" in err and "[data] workers" in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "run" / "result.json").exists()


def test_nproc_2_reads_each_ranks_share_from_a_lazy_folder(h, tmp_path, monkeypatch):
    """Two ranks with a worker each train on the folder read per batch and take the steps one process takes: plain
    SGD (no batchnorm: its statistics are per rank) would move twice as far if both ranks read the whole batch."""
    images = h.make_images(tmp_path / "img", n=48)
    spec = h.make_image_spec(tmp_path / "s.json", images, data={"workers": 1}, batchnorm=False,
                             train={"epochs": 2, "optimizer": {"name": "sgd", "lr": 0.5}})
    monkeypatch.setenv("PYTHONPATH", h.env()["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = train.run(spec, out=tmp_path / "two", nproc=2, quiet=True, device="cpu")
    assert result.test is not None and result.epochs_run == 2
    one = train.run(spec, out=tmp_path / "one", quiet=True, device="cpu")
    a, b = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-5  # the same steps


def test_ranks_read_disjoint_shares_that_cover_the_epoch():
    from archc.train.batches import local_batch, steps_per_epoch

    order = epoch_order(24, 0, 0)
    for step in range(steps_per_epoch(24, 8)):
        shares = [set(local_batch(order, step, 8, rank, 2)[0].tolist()) for rank in range(2)]
        assert not shares[0] & shares[1] and shares[0] | shares[1] == set(order[step * 8:(step + 1) * 8].tolist())


EVERY = {"random_resized_crop": {"scale": [0.3, 1.0]}, "hflip": 0.5, "vflip": 0.5, "rotation": 20.0,
         "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
         "policy": "randaugment", "random_erasing": {"p": 0.5}, "mixup": 0.8, "cutmix": 1.0}


def _graph(path) -> tuple[list, list]:
    """An ONNX graph's nodes (op, inputs, outputs, attributes) and initializers (name, dtype, shape): not values."""
    g = onnx.load(str(path)).graph
    nodes = [(n.op_type, list(n.input), list(n.output), [onnx.helper.get_attribute_value(a) for a in n.attribute])
             for n in g.node]
    return nodes, sorted((i.name, i.data_type, list(i.dims)) for i in g.initializer)


def _metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_every_augment_transform_trains_and_never_reaches_the_exported_graph(h, tmp_path):
    images = h.make_images(tmp_path / "img", n=48)
    plain = h.make_image_spec(tmp_path / "plain.json", images, train={"epochs": 1})
    train.run(plain, out=tmp_path / "plain", quiet=True, device="cpu")
    runs = {"every": EVERY, "again": EVERY, "trivial": EVERY | {"policy": "trivialaugment", "mixup": 0.0}}
    for name, augment in runs.items():
        spec = h.make_image_spec(tmp_path / f"{name}.json", images, data={"augment": augment}, train={"epochs": 1})
        result = train.run(spec, out=tmp_path / name, quiet=True, device="cpu")
        assert result.test is not None and np.isfinite(result.final["train_loss"]), name
        assert _graph(tmp_path / name / "model.onnx") == _graph(tmp_path / "plain" / "model.onnx"), name
        recorded = json.loads(_metadata(tmp_path / name / "model.onnx")["archc.augment"])
        assert recorded["training_only"] is True and set(augment) - {"mixup"} <= set(recorded["transforms"]), name
    assert "archc.augment" not in _metadata(tmp_path / "plain" / "model.onnx")
    # the same seed: the same augmented batches, so the same weights; the augmentation changed what was learned
    assert _same(_weights(tmp_path / "every"), _weights(tmp_path / "again"))
    assert not _same(_weights(tmp_path / "every"), _weights(tmp_path / "plain"))


def test_the_same_seed_gives_the_same_augmented_batches(h, tmp_path):
    from archc.language.model import Augment
    from archc.train.augment import Augmenter
    from archc.train.loader import LoaderSplit
    from archc.train.splits import Feed, batch_key

    images = h.make_images(tmp_path / "img", n=24)
    ds = load(f"images:{images}", val_fraction=0.0, test_fraction=0.0, in_memory=False, channels=3, size="16x16")
    feed = Feed(Augmenter.of(Augment.model_validate(EVERY), 3))
    plan = [epoch_order(len(ds.train), 0, 0)[:8], epoch_order(len(ds.train), 0, 0)[8:16]]

    def read(workers: int, seed: int) -> list[torch.Tensor]:
        split = LoaderSplit(ds.train.x, torch.from_numpy(ds.train.y), torch.device("cpu"), feed, workers)
        try:
            return [x for x, _ in split.batches(plan, [batch_key(seed, 0, s, 0) for s in range(len(plan))])]
        finally:
            split.close()
    first, second, other = read(0, 7), read(2, 7), read(0, 8)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not any(torch.equal(a, b) for a, b in zip(first, other))
    assert not torch.equal(first[0], torch.from_numpy(ds.train.x[plan[0].numpy()]))


def test_a_decoded_jpeg_is_c_contiguous(h, tmp_path):
    from archc.data.images import read_image

    images = h.make_images(tmp_path / "img", n=3)
    a = read_image(next(images.glob("c0/*.jpg")))
    assert a.shape == (3, 16, 16) and a.dtype == np.float32 and a.flags.c_contiguous


class _Counting:
    """A Reader that counts what it reads (one process: no workers)."""

    def __init__(self, n: int) -> None:
        self.n, self.reads = n, 0

    def __len__(self) -> int:
        return self.n

    def read(self, i: int) -> np.ndarray:
        self.reads += 1
        return np.full((2,), i, dtype=np.float32)

    def where(self, i: int) -> str:
        return f"example {i}"


def test_splitting_a_lazy_source_reads_nothing():
    from archc.data.arrays import from_arrays
    from archc.data.base import Splits
    from archc.data.lazy import Lazy

    reader = _Counting(40)
    ds = from_arrays("counting", Lazy(reader, (2,), np.float32), np.arange(40) % 2, classes=["a", "b"],
                     task="classification", splits=Splits(0.25, 0.25, 0))
    assert reader.reads == 0
    assert all(isinstance(s.x, Lazy) for s in (ds.train, ds.val, ds.test))
    assert sorted(np.concatenate([s.x.index for s in (ds.train, ds.val, ds.test)]).tolist()) == list(range(40))
    assert np.array_equal(np.asarray(ds.test.x)[:, 0], ds.test.x.index)  # each view reads its own examples
