"""Crash safety: a run killed with SIGKILL at a random step and resumed ends bit-identical to an uninterrupted one."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

STEPS_PER_EPOCH, EPOCHS, EVERY = 75, 4, 5  # 1,200 training examples in batches of 16


def _kill_at_random_step(h, cmd, env, out, rng: random.Random, steps: int = STEPS_PER_EPOCH * EPOCHS,
                         every: int = EVERY) -> int:
    """Start training, wait for a checkpoint at or past a random step, wait a little more, SIGKILL it."""
    target = rng.randrange(every, int(0.6 * steps))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while h.state_step(out) < target:
            assert proc.poll() is None, f"training ended before step {target}: {proc.stderr.read().decode()[-500:]}"
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.01))  # land between checkpoints, or in the middle of writing one
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "result.json").exists()
    return target


@pytest.mark.crash
def test_sigkill_then_resume_matches_uninterrupted_run(h, tmp_path):
    data = h.make_npz(tmp_path / "d.npz", n=2000, features=32, classes=4)
    spec = h.make_spec(tmp_path / "s.json", data, features=32, classes=4, hidden=128, dropout=0.2,
                       train={"epochs": EPOCHS, "checkpoint_every": EVERY})
    env = h.env()
    seed = int.from_bytes(os.urandom(4), "little")
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    target = _kill_at_random_step(h, h.cmd(str(spec), "--out", str(killed), "--quiet"), env, killed,
                                  random.Random(seed))
    stopped_at = h.state_step(killed)
    subprocess.run(h.cmd(str(spec), "--out", str(killed), "--quiet", "--resume"), env=env, check=True,
                   capture_output=True)
    subprocess.run(h.cmd(str(spec), "--out", str(whole), "--quiet"), env=env, check=True, capture_output=True)
    why = f"killed past step {target} (test seed {seed}), resumed from step {stopped_at}"
    assert 0 < stopped_at < STEPS_PER_EPOCH * EPOCHS, why
    for name in ("checkpoint.safetensors", "best.safetensors"):
        a, b = load_file(killed / name), load_file(whole / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs: {why}"
    rows = [[{k: v for k, v in json.loads(line).items() if k not in ("seconds", "samples_per_s")}
             for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (killed, whole)]
    assert rows[0] == rows[1] and len(rows[0]) == EPOCHS, why
    assert not list(killed.glob(".*.tmp"))


IMAGE_STEPS, IMAGE_EPOCHS, IMAGE_EVERY = 10, 3, 2  # 80 training images of 160 in batches of 8


@pytest.mark.crash
def test_sigkill_with_loader_workers_on_a_jpeg_folder_then_resume_matches(h, tmp_path):
    """The same on a JPEG folder read per batch by a loader worker (the loader's place in the epoch is the step),
    a channels_last CNN with batchnorm (Adam's moments restored in the weights' layout) and keyed augmentation."""
    images = h.make_images(tmp_path / "img", n=160)
    spec = h.make_image_spec(tmp_path / "s.json", images,
                             data={"workers": 1, "augment": {"hflip": 0.5, "random_resized_crop": {}},
                                   "val_fraction": 0.25, "test_fraction": 0.25},
                             train={"epochs": IMAGE_EPOCHS, "checkpoint_every": IMAGE_EVERY})
    env, seed = h.env(), int.from_bytes(os.urandom(4), "little")
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    run = ("--device", "cpu", "--quiet")
    reference = subprocess.Popen(h.cmd(str(spec), "--out", str(whole), *run), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        target = _kill_at_random_step(h, h.cmd(str(spec), "--out", str(killed), *run), env, killed,
                                      random.Random(seed), IMAGE_STEPS * IMAGE_EPOCHS, IMAGE_EVERY)
        stopped_at = h.state_step(killed)
        why = f"killed past step {target} (test seed {seed}), resumed from step {stopped_at}"
        resumed = subprocess.run(h.cmd(str(spec), "--out", str(killed), *run, "--resume"), env=env,
                                 capture_output=True, text=True)
        assert resumed.returncode == 0, f"{why}: {resumed.stderr[-2000:]}"
        assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()[-2000:]
    finally:
        reference.kill()
        reference.wait()
    assert 0 < stopped_at < IMAGE_STEPS * IMAGE_EPOCHS, why
    (ours, our_rows, our_test), (theirs, their_rows, their_test) = _outcome(killed), _outcome(whole)
    for name, a in ours.items():
        b = theirs[name]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs: {why}"
    assert our_rows == their_rows and len(our_rows) == IMAGE_EPOCHS and our_test == their_test, why


def test_resume_needs_the_same_world_size(h, tmp_path):
    import archc.train as train
    from archc.errors import InputError
    from archc.train.distributed import Dist
    from archc.train.loop import build
    from archc.train.recipe import Overrides, prepare
    from archc.train.state import Tally, resume

    spec = h.make_spec(tmp_path / "s.json", h.make_npz(tmp_path / "d.npz"), train={"epochs": 1})
    train.run(spec, out=tmp_path / "run", quiet=True)
    setup, two = prepare(spec, Overrides(), tmp_path / "run"), Dist(rank=0, world=2)
    learner, _ = build(setup, two, torch.device("cpu"))
    with pytest.raises(InputError, match="expected --nproc 1 as in the interrupted run, received 2"):
        resume(setup.run_dir, learner, Tally(torch.device("cpu")), two, setup.sha256)


# ---- --nproc 2: the launcher killed at a random moment ---------------------------------------------------------
NPROC_EPOCHS, NPROC_EVERY, NPROC_STEPS = 3, 3, 19  # 300 examples: 180 train in global batches of 10 (18 + 1)


def _writers(folder) -> list[int]:
    """Pids of live processes whose command line names `folder` (torchrun and its workers carry --out FOLDER)."""
    mine, pids = str(folder).encode(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    named = mine in f.read()
                with open(f"/proc/{entry}/stat") as f:
                    live = f.read().split(")")[-1].split()[0] != "Z"
            except OSError:  # ended meanwhile
                continue
            if named and live:
                pids.append(int(entry))
    return pids


def _kill_launcher_at_random(h, cmd, env, out, rng: random.Random) -> str:
    """Start `archc train --nproc 2`; SIGKILL the launcher at a random moment: while torchrun starts its workers,
    or past a random checkpoint (plus a random few ms, maybe inside a write). Says which."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if rng.random() < 0.3:
            delay = rng.uniform(0.0, 4.0)
            time.sleep(delay)
            moment = f"{delay:.2f} s after the start"
        else:
            target = rng.randrange(NPROC_EVERY, NPROC_STEPS * NPROC_EPOCHS - NPROC_EVERY)
            deadline = time.monotonic() + 60
            while h.state_step(out) < target:
                assert proc.poll() is None, f"training ended before step {target}: {proc.stderr.read().decode()}"
                assert time.monotonic() < deadline, "training made no progress"
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.01))
            moment = f"past step {target}"
        assert proc.poll() is None, f"the run ended before the kill ({moment})"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return moment


def _wait_all_ended(folder, why: str, seconds: float = 30) -> None:
    """Wait until no process names `folder`; SIGKILL what is left (so a failure leaves nothing running)."""
    deadline = time.monotonic() + seconds
    try:
        while _writers(folder):
            assert time.monotonic() < deadline, f"still running {seconds:.0f} s after the launcher's SIGKILL: {why}"
            time.sleep(0.05)
    finally:
        for pid in _writers(folder):
            os.kill(pid, signal.SIGKILL)


def _outcome(run) -> tuple[dict, list, dict]:
    """A finished run's weights (checkpoint and best), epoch rows (timings left out) and test metrics."""
    weights = {name: load_file(run / name) for name in ("checkpoint.safetensors", "best.safetensors")}
    rows = [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "samples_per_s")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]
    return weights, rows, json.loads((run / "result.json").read_text())["test"]


@pytest.mark.crash
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_sigkill_of_the_nproc_launcher_then_resume_matches_an_uninterrupted_run(h, tmp_path):
    """No worker outlives the launcher's SIGKILL, and --resume then ends where an uninterrupted --nproc 2 run does,
    bit for bit (one CPU per rank: 2 cores are enough)."""
    data = h.make_npz(tmp_path / "d.npz", n=300, features=16, classes=3)
    spec = h.make_spec(tmp_path / "s.json", data, hidden=64, dropout=0.1,
                       train={"epochs": NPROC_EPOCHS, "batch_size": 10, "checkpoint_every": NPROC_EVERY})
    env, seed = h.env(), int.from_bytes(os.urandom(4), "little")
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    nproc = ("--nproc", "2", "--device", "cpu", "--quiet")
    # the uninterrupted run goes alongside (half the wall time; the two share nothing but the spec and data)
    reference = subprocess.Popen(h.cmd(str(spec), "--out", str(whole), *nproc), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        moment = _kill_launcher_at_random(h, h.cmd(str(spec), "--out", str(killed), *nproc), env, killed,
                                          random.Random(seed))
        why = f"killed {moment} (test seed {seed})"
        _wait_all_ended(killed, why)
        assert not (killed / "result.json").exists(), why
        why += f", resumed from step {h.state_step(killed)}"
        resumed = subprocess.run(h.cmd(str(spec), "--out", str(killed), *nproc, "--resume"), env=env,
                                 capture_output=True, text=True)
        assert resumed.returncode == 0, f"{why}: {resumed.stderr[-2000:]}"
        assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()[-2000:]
    finally:
        reference.kill()
        reference.wait()
    (ours, our_rows, our_test), (theirs, their_rows, their_test) = _outcome(killed), _outcome(whole)
    for name, a in ours.items():
        b = theirs[name]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs: {why}"
    assert our_rows == their_rows and len(our_rows) == NPROC_EPOCHS and our_test == their_test, why
    assert not list(killed.glob(".*.tmp")) and not (killed / ".archc.lock").exists(), why
