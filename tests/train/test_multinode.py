"""Several machines: `archc train --nnodes 2 --node-rank R --rdzv-endpoint 127.0.0.1:PORT`, two launchers on this one
machine standing in for two nodes (each its own torchrun, gloo, the rendezvous store at node 0's address).

Node 1 runs in a folder of its own with a run folder path that does not exist there (a per-node disk): only node 0
writes, every rank checks it reads node 0's spec and data, a node killed mid-run ends the other with one message,
and `--resume` on both (node 1 still without the run folder: rank 0 sends it the state) ends bit-identical to a
run never interrupted.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from archc.errors import InputError
from archc.train.distributed import Nodes, torchrun_command

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="two launchers, PR_SET_PDEATHSIG")
TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_cmd(h, spec: Path, out: Path, rank: int, port: int, *extra: str) -> list[str]:
    return h.cmd(str(spec), "--out", str(out), "--nproc", "1", "--nnodes", "2", "--node-rank", str(rank),
                 "--rdzv-endpoint", f"127.0.0.1:{port}", "--device", "cpu", *extra)


def start_nodes(h, spec0: Path, spec1: Path, out: Path, node1: Path, *extra: str) -> list[subprocess.Popen]:
    """Node 0 in the test's folder, node 1 in `node1` (its own disk: `out` does not exist there)."""
    port = free_port()
    env = h.env()
    return [subprocess.Popen(node_cmd(h, spec, out if r == 0 else Path("runs/x"), r, port, *extra), env=env,
                             cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r, (spec, cwd) in enumerate([(spec0, spec0.parent), (spec1, node1)])]


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append((p.returncode, stdout + stderr))
    return out


@pytest.fixture
def setting(h, tmp_path):
    data = h.make_npz(tmp_path / "d.npz", n=600, features=16, classes=3)
    spec = h.make_spec(tmp_path / "s.json", "d.npz", train={"epochs": 3, "batch_size": 8, "checkpoint_every": 5})
    node1 = tmp_path / "node1"
    node1.mkdir()
    (node1 / "s.json").write_text(spec.read_text())  # node 1's own copies of the spec and the data, the same files
    (node1 / "d.npz").write_bytes(data.read_bytes())
    return spec, node1 / "s.json", node1


def test_two_nodes_train_as_two_local_ranks_and_only_node_0_writes(h, tmp_path, setting):
    spec, spec1, node1 = setting
    results = finish(start_nodes(h, spec, spec1, tmp_path / "run", node1))
    assert [code for code, _ in results] == [0, 0], results
    assert "Traceback" not in results[0][1] + results[1][1]
    assert "node 1 of 2: its 1 rank finished; node 0 wrote the run folder runs/x" in results[1][1]
    assert not (node1 / "runs").exists() and set(os.listdir(node1)) == {"s.json", "d.npz"}
    local = tmp_path / "local"
    env = h.env()
    subprocess.run(h.cmd(str(spec), "--out", str(local), "--nproc", "2", "--device", "cpu", "-q"), env=env,
                   check=True, capture_output=True, timeout=TIMEOUT)
    a, b = load_file(tmp_path / "run" / "checkpoint.safetensors"), load_file(local / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # the same 2 ranks: the same arithmetic
    assert (tmp_path / "run" / "model.onnx").is_file()


def test_a_node_with_other_data_is_refused_by_every_rank(h, tmp_path, setting):
    spec, spec1, node1 = setting
    h.make_npz(node1 / "d.npz", n=600, features=16, classes=3, seed=1)  # node 1's copy differs
    results = finish(start_nodes(h, spec, spec1, tmp_path / "run", node1))
    for code, text in results:
        assert code == 1 and "Traceback" not in text, text
        assert ("expected every rank to read the same spec and data as rank 0 (node 0, " in text
                and "data split: rank 1 (node 1, " in text), text
    assert not (tmp_path / "run" / "model.onnx").exists()


def test_a_killed_node_ends_the_other_with_one_message_and_resume_completes(h, tmp_path, setting):
    spec, spec1, node1 = setting
    run = tmp_path / "run"
    procs = start_nodes(h, spec, spec1, run, node1)
    try:
        deadline = time.monotonic() + TIMEOUT
        while h.state_step(run) < 10:
            assert procs[0].poll() is None and time.monotonic() < deadline, procs[0].communicate()
            time.sleep(0.01)
        procs[1].send_signal(signal.SIGKILL)  # node 1's launcher: its torchrun and rank go with it
    finally:
        (code0, text0), _ = finish(procs)
    assert code0 == 1 and "Traceback" not in text0, text0
    assert "expected every rank of the run to stay up, received a lost connection to another rank" in text0, text0
    assert "--resume on every node" in text0
    assert not (run / "result.json").exists() and h.state_step(run) >= 10
    results = finish(start_nodes(h, spec, spec1, run, node1, "--resume"))
    assert [code for code, _ in results] == [0, 0], results
    assert not (node1 / "runs").exists()  # node 1 resumed from rank 0's state, sent over the process group
    whole = tmp_path / "whole"
    results = finish(start_nodes(h, spec, spec1, whole, node1))
    assert [code for code, _ in results] == [0, 0], results
    a, b = load_file(run / "checkpoint.safetensors"), load_file(whole / "checkpoint.safetensors")
    assert all((a[k] == b[k]).all() for k in a), "resumed across nodes: not the uninterrupted run's weights"
    assert json.loads((run / "result.json").read_text())["epochs_run"] == 3


def test_node_flags_are_checked():
    assert Nodes().check() == Nodes()
    assert Nodes(2, 1, "10.0.0.1:29500").check().host_port() == ("10.0.0.1", 29500)
    assert Nodes(2, 0, "[::1]:29500").check().host_port() == ("::1", 29500)
    for nodes, message in [(Nodes(2, 2, "h:1"), "expected --node-rank in [0, 1] for --nnodes 2, received 2"),
                           (Nodes(2, 0, None), "expected --rdzv-endpoint HOST:PORT (node 0's address) with --nnodes 2"),
                           (Nodes(2, 0, "host"), "expected --rdzv-endpoint HOST:PORT with a port in 1-65535, received 'host'"),
                           (Nodes(2, 0, "h:70000"), "with a port in 1-65535, received 'h:70000'"),
                           (Nodes(1, 0, "h:1"), "expected --rdzv-endpoint only with --nnodes of 2 or more")]:
        with pytest.raises(InputError, match=None) as e:
            nodes.check()
        assert message in str(e.value), str(e.value)


def test_torchrun_gets_a_static_rendezvous_at_node_0():
    cmd = torchrun_command(4, ["s.toml"], Nodes(3, 2, "node0:29400"))
    assert cmd[cmd.index("torch.distributed.run") + 1:cmd.index("-m", 3)] == [
        "--nnodes=3", "--node_rank=2", "--master_addr=node0", "--master_port=29400", "--max_restarts=0",
        "--nproc_per_node=4"]
    assert "--standalone" in torchrun_command(2, ["s.toml"])


def test_the_cli_refuses_bad_node_flags_with_one_message(h, tmp_path):
    data = h.make_npz(tmp_path / "d.npz")
    spec = h.make_spec(tmp_path / "s.json", data)
    r = subprocess.run(h.cmd(str(spec), "--nnodes", "2", "--out", str(tmp_path / "r")), env=h.env(),
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "--rdzv-endpoint: expected --rdzv-endpoint HOST:PORT (node 0's address) with --nnodes 2" in r.stderr + r.stdout
    assert not (tmp_path / "r").exists()
