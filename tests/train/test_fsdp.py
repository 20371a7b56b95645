"""[train] strategy = "fsdp" (FSDP2 per block, sharded checkpoints through torch.distributed.checkpoint) and
[train] activation_checkpointing, on CPU ranks (gloo).

FSDP2 takes the steps DDP takes: each rank's gradients are reduce-scattered instead of all-reduced, so the two
differ only in float rounding (measured: about 1e-8 after 2 epochs; stated tolerance 1e-5). A killed FSDP run
resumed at the same --nproc ends bit for bit where an uninterrupted one does; resumed at another --nproc it
re-shards the same weights and optimizer state (checked exactly) and goes on (not bit-identical: see README).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

import archc.train as train

WEIGHT_ATOL = 1e-5
EPOCHS, EVERY, KILL_AT = 3, 3, 8  # 180 training examples in global batches of 10: 18 steps an epoch


def block_spec(path, data, *, train_: dict | None = None, dropout: float = 0.0):
    """16 features -> linear -> 3 residual blocks (linear, relu, [dropout], linear, add) -> linear(3)."""
    inner = [{"id": "a", "op": "linear", "out_features": 16, "act": "relu"},
             *([{"id": "drop", "op": "dropout", "p": dropout}] if dropout else []),
             {"id": "b", "op": "linear", "out_features": 16}, {"id": "o", "op": "add", "from": ["x", "b"]}]
    spec = {"archc": 1, "model": {"name": "blocks"}, "inputs": {"x": {"shape": [16]}},
            "task": {"kind": "classification"}, "blocks": {"res": {"layers": inner}},
            "layers": [{"id": "fc1", "op": "linear", "out_features": 16, "act": "relu"},
                       {"id": "layers", "use": "res", "repeat": 3}, {"id": "out", "op": "linear", "out_features": 3}],
            "train": {"epochs": 2, "batch_size": 10, "optimizer": {"name": "adamw", "lr": 3e-3}} | (train_ or {}),
            "data": {"source": f"npz:{data}", "val_fraction": 0.2, "test_fraction": 0.2}}
    path.write_text(json.dumps(spec))
    return path


def graph_of(onnx_path) -> tuple[list[str], dict[str, tuple]]:
    import onnx

    m = onnx.load(str(onnx_path))
    return [n.op_type for n in m.graph.node], {i.name: tuple(i.dims) for i in m.graph.initializer}


def test_fsdp_takes_ddps_steps_and_exports_the_same_model(h, tmp_path, monkeypatch):
    """Two FSDP2 ranks against two DDP ranks (with activation checkpointing, which changes nothing but memory)."""
    data = h.make_npz(tmp_path / "d.npz", n=300)
    ddp = block_spec(tmp_path / "ddp.json", data, train_={"activation_checkpointing": True})
    fsdp = block_spec(tmp_path / "fsdp.json", data)
    monkeypatch.setenv("PYTHONPATH", h.env()["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    a = train.run(ddp, out=tmp_path / "ddp", nproc=2, quiet=True, device="cpu")
    b = train.run(fsdp, out=tmp_path / "fsdp", nproc=2, quiet=True, device="cpu", strategy="fsdp")
    assert json.loads((tmp_path / "fsdp" / "spec.json").read_text())["train"]["strategy"] == "fsdp"  # --strategy
    for name in ("checkpoint.safetensors", "best.safetensors"):
        x, y = load_file(tmp_path / "ddp" / name), load_file(tmp_path / "fsdp" / name)
        assert x.keys() == y.keys()
        diff = max(float((x[k] - y[k]).abs().max()) for k in x)
        assert diff <= WEIGHT_ATOL, f"{name}: FSDP's weights differ from DDP's by {diff:.2e}"
    assert b.final["train_loss"] == pytest.approx(a.final["train_loss"], abs=1e-5)
    assert graph_of(tmp_path / "ddp" / "model.onnx") == graph_of(tmp_path / "fsdp" / "model.onnx")
    shards = [p for p in (tmp_path / "fsdp" / "train_state.dcp").iterdir()]
    assert len(shards) == 1 and sorted(f.name for f in shards[0].iterdir()) == [".metadata", "__0_0.distcp",
                                                                                "__1_0.distcp"]
    assert not (tmp_path / "ddp" / "train_state.dcp").exists()
    assert b.test and b.test["examples"] == 60
    for run in (a, b):  # every rank's peak resident set over training, gathered by rank 0 (bytes: torch alone > 100 MiB)
        assert run.peak_memory is not None and len(run.peak_memory["rss"]) == 2, run.peak_memory
        assert all(100 * 2**20 < rss < 16 * 2**30 for rss in run.peak_memory["rss"]), run.peak_memory


def _kill_launcher_past(h, cmd, env, out, step: int) -> None:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while h.state_step(out) < step:
            assert proc.poll() is None, f"training ended before step {step}: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    deadline = time.monotonic() + 30  # the ranks end with the launcher (archc.train.distributed.die_with_parent)
    while (out / ".archc.lock").exists() and any(str(out).encode() in open(f"/proc/{p}/cmdline", "rb").read()
                                                 for p in os.listdir("/proc") if p.isdigit() and _alive(p)):
        assert time.monotonic() < deadline, "ranks outlived the launcher"
        time.sleep(0.05)


def _alive(pid: str) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z" and int(pid) != os.getpid()
    except OSError:
        return False


def _rows(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "samples_per_s")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.crash
def test_a_killed_fsdp_run_resumes_bit_identically_and_at_another_world_size(h, tmp_path):
    data = h.make_npz(tmp_path / "d.npz", n=300)
    spec = block_spec(tmp_path / "s.json", data, dropout=0.1,  # dropout: each rank's RNG stream is restored
                      train_={"epochs": EPOCHS, "checkpoint_every": EVERY, "strategy": "fsdp"})
    env = h.env()
    whole, killed, other = tmp_path / "whole", tmp_path / "killed", tmp_path / "other"
    two = ("--nproc", "2", "--device", "cpu", "--quiet")
    reference = subprocess.Popen(h.cmd(str(spec), "--out", str(whole), *two), env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
    try:
        _kill_launcher_past(h, h.cmd(str(spec), "--out", str(killed), *two), env, killed, KILL_AT)
        assert not (killed / "result.json").exists()
        stopped = h.state_step(killed)
        shutil.copytree(killed, other)
        # what the state names re-shards exactly into one process: the latest weights written with it
        _check_reshards_into_one_process(other, spec, stopped)
        for out, flags in ((killed, two), (other, ("--nproc", "1", "--device", "cpu", "--quiet"))):
            done = subprocess.run(h.cmd(str(spec), "--out", str(out), *flags, "--resume"), env=env,
                                  capture_output=True, text=True)
            assert done.returncode == 0, f"resumed from step {stopped}: {done.stderr[-2000:]}"
        assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-2000:]
    finally:
        reference.kill()
        reference.wait()
    why = f"resumed from step {stopped}"
    for name in ("checkpoint.safetensors", "best.safetensors"):
        a, b = load_file(killed / name), load_file(whole / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{name} differs: {why}"
    assert _rows(killed) == _rows(whole) and len(_rows(whole)) == EPOCHS, why
    # another world size: the epochs before the kill as they were, then the same number of steps to the end
    rows = _rows(other)
    assert len(rows) == EPOCHS and rows[:stopped // 18] == _rows(whole)[:stopped // 18], why
    assert [r["step"] for r in rows] == [r["step"] for r in _rows(whole)], why
    assert json.loads((other / "train_state.json").read_text())["world"] == 1
    assert len(list((other / "train_state.dcp").iterdir())) == 1  # older sharded checkpoints are removed


def _check_reshards_into_one_process(run, spec, step: int) -> None:
    import archc.train.sharding as sharding
    from archc.train.checkpoint import load_state
    from archc.train.recipe import Overrides, prepare
    from archc.lower import lower
    from archc.train.optim import build_optimizer

    setup = prepare(spec, Overrides(), run)
    model = lower(setup.graph, seed=123)
    optimizer = build_optimizer(model, setup.spec.train.optimizer, fused=False)
    saved = load_state(setup.run_dir)
    assert saved.scalars["step"] == step and saved.scalars["world"] == 2
    sharding.load(run / "train_state.dcp" / saved.scalars["optimizer"]["sharded"], model, optimizer)
    latest = load_file(run / "checkpoint.safetensors")
    assert all(torch.equal(v, latest[k]) for k, v in model.state_dict().items())
    moments = [optimizer.state[p] for p in model.parameters()]
    assert all(float(m["step"]) == step and m["exp_avg"].shape == p.shape and m["exp_avg"].abs().sum() > 0
               for m, p in zip(moments, model.parameters()))


def test_activation_checkpointing_gives_the_same_loss_and_gradients(h, tmp_path):
    """Per block, with dropout: the recomputed blocks draw the forward's masks (the RNG state is kept)."""
    from archc.pipeline import compile_spec
    from archc.lower import lower
    from archc.train.sharding import Checkpointed, checkpointed

    graph = compile_spec(json.loads(block_spec(tmp_path / "s.json", "d.npz", dropout=0.3).read_text())).graph
    plain = lower(graph, seed=0).train()
    wrapped = checkpointed(plain, graph)
    assert sum(isinstance(m, Checkpointed) for m in wrapped.modules()) == 3  # one per repeat of the block
    x = torch.randn(32, 16)
    results = []
    for module in (plain, wrapped):
        torch.manual_seed(7)
        loss = module(x).logsumexp(-1).mean()
        plain.zero_grad()
        loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in plain.named_parameters()}))
    (a, ga), (b, gb) = results
    assert torch.allclose(a, b, atol=1e-6) and ga.keys() == gb.keys()
    assert all(torch.allclose(ga[k], gb[k], atol=1e-6) for k in ga)
    assert set(dict(wrapped.named_parameters()).values()) <= set(plain.parameters()) | set()  # shared, not copies


def test_activation_checkpointing_trains_as_without_it_in_one_process(h, tmp_path):
    data = h.make_npz(tmp_path / "d.npz", n=200)
    runs = {}
    for on in (False, True):
        spec = block_spec(tmp_path / f"{on}.json", data, dropout=0.2, train_={"activation_checkpointing": on})
        runs[on] = train.run(spec, out=tmp_path / str(on), quiet=True, device="cpu", optimize=False)
    a, b = (load_file(tmp_path / str(on) / "checkpoint.safetensors") for on in (False, True))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert runs[True].final["train_loss"] == pytest.approx(runs[False].final["train_loss"], abs=1e-6)


def test_fsdp_with_lora_is_refused_by_validate(tmp_path):
    from archc.pipeline import compile_spec
    from archc.errors import ArchcError

    spec = json.loads(block_spec(tmp_path / "s.json", "d.npz").read_text())
    spec["train"] |= {"strategy": "fsdp", "lora": {"rank": 4, "targets": ["out"]}}
    with pytest.raises(ArchcError, match="expected strategy = \"ddp\" with \\[train.lora\\]"):
        compile_spec(spec)


def test_a_resume_without_its_sharded_checkpoint_is_one_clear_error(h, tmp_path):
    """One process with strategy fsdp writes the sharded checkpoint too (so it can resume on more ranks); a run
    folder that lost it is refused before any step, naming the folder."""
    from archc.errors import ModelError

    data = h.make_npz(tmp_path / "d.npz", n=200)
    spec = block_spec(tmp_path / "s.json", data, train_={"strategy": "fsdp", "epochs": 1})
    train.run(spec, out=tmp_path / "r", quiet=True, device="cpu", optimize=False)
    folders = list((tmp_path / "r" / "train_state.dcp").iterdir())
    assert len(folders) == 1 and (folders[0] / ".metadata").is_file()
    shutil.rmtree(folders[0])
    (tmp_path / "r" / "result.json").unlink()  # an unfinished run, as a kill leaves it
    with pytest.raises(ModelError, match="expected the sharded checkpoint the state names"):
        train.run(spec, out=tmp_path / "r", quiet=True, device="cpu", optimize=False, resume=True)


def test_the_ranks_on_this_machine_share_its_memory_and_fsdp_fits_where_ddp_does_not(h, tmp_path, monkeypatch):
    """`archc train --nproc 2` on the CPU refuses, before the data are read or a rank starts, a run whose 2 ranks
    together exceed this machine's memory (ARCHC_MEMORY_LIMIT here), by the estimate validate prints; the same model
    sharded by FSDP2 passes the check."""
    from archc.errors import ArchcError
    from archc.graph.memory import training
    from archc.pipeline import compile_spec
    from archc.train.api import check_memory
    from archc.train.recipe import Overrides, prepare

    def wide(strategy: str):  # 33.6M parameters (134 MiB): training's copies outgrow the export's checks
        layers = [{"op": "linear", "out_features": 4096}, {"op": "linear", "out_features": 4096},
                  {"op": "linear", "out_features": 3}]
        path = tmp_path / f"{strategy}.json"
        path.write_text(json.dumps({"archc": 1, "model": {"name": "wide"}, "inputs": {"x": {"shape": [4096]}},
                                    "task": {"kind": "classification"}, "layers": layers,
                                    "train": {"batch_size": 8, "strategy": strategy},
                                    "data": {"source": f"npz:{tmp_path / 'd.npz'}"}}))
        return path

    ddp, fsdp = wide("ddp"), wide("fsdp")
    per_rank = {s: training(c.graph, c.spec.train, 2).total
                for s, c in (("ddp", compile_spec(ddp)), ("fsdp", compile_spec(fsdp)))}
    assert per_rank["fsdp"] < per_rank["ddp"]
    monkeypatch.setenv("ARCHC_MEMORY_LIMIT", str(2 * per_rank["ddp"] - 1))
    with pytest.raises(ArchcError, match="shared by the 2 ranks on this machine") as e:
        train.run(ddp, out=tmp_path / "r", nproc=2, quiet=True, device="cpu")
    assert "strategy = \"fsdp\"" in e.value.hint and not (tmp_path / "r").exists()
    check_memory(prepare(fsdp, Overrides(), tmp_path / "r"), "cpu", 2, 2)  # fits: no error
    check_memory(prepare(ddp, Overrides(), tmp_path / "r"), "cpu", 2, 1)   # one rank on this machine: fits
