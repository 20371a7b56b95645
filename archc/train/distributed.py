"""Distributed training: `--nproc N` re-runs the command under torchrun; each process is one rank of a
DistributedDataParallel run (gloo on CPU, NCCL on CUDA). Rank 0 alone writes files and prints.

Several machines: `archc train SPEC --nproc 8 --nnodes 2 --node-rank R --rdzv-endpoint HOST:PORT` on each, the same
command but for R (`Nodes`). Node 0 hosts the rendezvous store at HOST:PORT and global rank 0: torchrun's static
rendezvous numbers the ranks node by node (node R holds ranks R*nproc ... R*nproc+nproc-1), so the run folder is
always node 0's. After joining, the ranks check that they agree on the spec, the data split and whether the run
resumes (`Dist.agree`); a resumed run's state is read by rank 0 and sent to the others (`Dist.share_file`), so a node
need not see node 0's disk. A rank that loses its peers (a node stopped) ends with one message (`lost_peers`).
torchrun's own flags around `-m archc.train` still work (README).
"""
from __future__ import annotations

import gc
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from archc.errors import ArchcError, ErrorList, InputError
from archc.threads import cores


@dataclass
class Dist:
    """This process's place in the run: rank, world size, local rank (GPU index on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 0  # ranks on this node (torchrun's LOCAL_WORLD_SIZE; 0: all of them, one node)
    node: int = 0         # this node's rank (torchrun's GROUP_RANK)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def nodes(self) -> int:
        return max(1, self.world // (self.local_world or self.world))

    @classmethod
    def from_env(cls) -> "Dist":
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / GROUP_RANK (a plain process is rank 0
        of 1)."""
        env = os.environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return cls()
        world = int(env["WORLD_SIZE"])
        return cls(int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")), int(env.get("LOCAL_WORLD_SIZE", world)),
                   int(env.get("GROUP_RANK", "0")))

    def init(self, device: torch.device) -> None:
        """Join the process group: NCCL when training on CUDA, gloo otherwise."""
        if self.active and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
            # Release what still refers to the group now, not at interpreter shutdown: left to the exit, a rank
            # aborted in C++ ("terminate called without an active exception", no Python frame) in 10 of 54
            # two-process runs here, main included; with this collection, 0 of 28.
            gc.collect()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) over ranks; the tensor itself in a single process."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's copy of a same-shaped tensor, in rank order."""
        if not self.active:
            return [t]
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return parts

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` (a small picklable one) on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def decide(self, value: bool) -> bool:
        """Rank 0's `value` on every rank (what rank 0 alone can see: its run folder)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return bool(box[0])

    def agree(self, facts: dict[str, str]) -> None:
        """Every rank holds rank 0's `facts` (the spec's hash, the data split, ...): else an InputError on every rank
        naming what differs on which node and host. Ranks on several machines read their own copies of the spec
        and data: a node with another copy would train on other examples, silently."""
        if not self.active:
            return
        mine = {"node": self.node, "host": socket.gethostname(), "facts": facts}
        everyone: list = [None] * self.world
        dist.all_gather_object(everyone, mine)
        first = everyone[0]["facts"]
        differ = {}
        for rank, other in enumerate(everyone):
            for key in facts:
                if other["facts"].get(key) != first.get(key):
                    differ.setdefault(key, []).append(f"rank {rank} (node {other['node']}, {other['host']})")
        if differ:
            what = "; ".join(f"{key}: {', '.join(where)} differ from rank 0's" for key, where in differ.items())
            raise InputError(f"expected every rank to read the same spec and data as rank 0 (node 0, "
                             f"{everyone[0]['host']}), received {what}", where="--nnodes",
                             hint="give every node the same spec file, data and flags (see README: Several "
                                  "machines)")

    def share_file(self, path: "os.PathLike[str] | str") -> bytes | None:
        """The bytes of rank 0's file `path` on every rank (None where rank 0 has no such file): a node that does not
        share node 0's disk reads a resumed run's state this way."""
        data = None
        if self.main:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                data = None
        if not self.active:
            return data
        box = [data]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def fingerprint(splits: dict[str, object]) -> str:
    """A short hash of the data splits as the loop reads them: each split's size and its first, middle and last
    examples (x and y bytes). Ranks compare it (Dist.agree) instead of the whole data."""
    h = hashlib.sha256()
    for name in sorted(splits):
        split = splits[name]
        n = len(split)  # type: ignore[arg-type]
        h.update(f"{name}:{n};".encode())
        if n == 0:
            continue
        idx = torch.tensor(sorted({0, n // 2, n - 1}), dtype=torch.int64)
        for part in split.take(idx):  # type: ignore[attr-defined]
            _hash_tensors(h, part)
    return h.hexdigest()[:16]


def _hash_tensors(h, value: object) -> None:
    if isinstance(value, torch.Tensor):
        h.update(str((value.dtype, tuple(value.shape))).encode())
        h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    elif isinstance(value, dict):
        for k in sorted(value):
            h.update(str(k).encode())
            _hash_tensors(h, value[k])
    elif isinstance(value, (list, tuple)):
        for v in value:
            _hash_tensors(h, v)
    else:
        h.update(repr(value).encode())


# What a gloo/NCCL collective raises when a peer process or machine is gone (its socket closed, its store silent).
_LOST = re.compile(r"Connection (closed|reset) by peer|Broken pipe|Socket Timeout|timed out|Connection refused|"
                   r"recvBytes|ECONNRESET|EPIPE|NCCL communicator was aborted|failed to recv|Read error",
                   re.IGNORECASE)


def lost_peers(e: BaseException, dist_: "Dist") -> ArchcError | None:
    """The one message for a rank whose collective failed because another rank or node stopped (None: another
    error). The run folder keeps its last checkpoint: `--resume` on every node continues it."""
    if not dist_.active or not isinstance(e, RuntimeError) or not _LOST.search(str(e)):
        return None
    where = f"--nnodes {dist_.nodes}" if dist_.nodes > 1 else f"--nproc {dist_.world}"
    return ArchcError(f"expected every rank of the run to stay up, received a lost connection to another rank on "
                      f"rank {dist_.rank} (node {dist_.node}): a process or node stopped "
                      f"({str(e).splitlines()[0][:160]})", where=where,
                      hint="start the same command again with --resume on every node: the run continues from its "
                           "last checkpoint")


@dataclass(frozen=True)
class Nodes:
    """`--nnodes N --node-rank R --rdzv-endpoint HOST:PORT`: this launcher's place among N machines (1: this one)."""

    count: int = 1
    rank: int = 0
    endpoint: str | None = None

    def check(self) -> "Nodes":
        if self.count < 1:
            raise InputError(f"expected --nnodes of at least 1, received {self.count}", where="--nnodes")
        if not 0 <= self.rank < self.count:
            raise InputError(f"expected --node-rank in [0, {self.count - 1}] for --nnodes {self.count}, received "
                             f"{self.rank}", where="--node-rank")
        if self.count == 1:
            if self.rank or self.endpoint:
                flag = "--node-rank" if self.rank else "--rdzv-endpoint"
                raise InputError(f"expected {flag} only with --nnodes of 2 or more, received --nnodes 1", where=flag)
            return self
        if not self.endpoint:
            raise InputError(f"expected --rdzv-endpoint HOST:PORT (node 0's address) with --nnodes {self.count}, "
                             "received none", where="--rdzv-endpoint")
        self.host_port()
        return self

    def host_port(self) -> tuple[str, int]:
        host, sep, port = (self.endpoint or "").rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"expected --rdzv-endpoint HOST:PORT with a port in 1-65535, received "
                             f"{self.endpoint!r}", where="--rdzv-endpoint")
        return host.strip("[]"), int(port)

    @property
    def main(self) -> bool:
        return self.rank == 0


def torchrun_command(nproc: int, args: list[str], nodes: Nodes = Nodes()) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc_per_node N -m archc.train ARGS`; on several nodes,
    torchrun's static rendezvous at node 0's HOST:PORT (ranks numbered node by node, none restarted)."""
    if nodes.count == 1:
        where = ["--standalone"]
    else:
        host, port = nodes.host_port()
        where = [f"--nnodes={nodes.count}", f"--node_rank={nodes.rank}", f"--master_addr={host}",
                 f"--master_port={port}", "--max_restarts=0"]
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={nproc}",
            "-m", "archc.train", *args]


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """For torchrun's process: SIGTERM when the launcher dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG), so
    torchrun stops its workers instead of running on, writing the run folder. None where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return None

    def arm() -> None:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the launcher died before the line above: nobody is left to signal us
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


def launch(nproc: int, args: list[str], extra_env: dict[str, str] | None = None, nodes: Nodes = Nodes()) -> None:
    """Run `archc train ARGS` as `nproc` local processes (this node's share of `nodes`); ArchcError when any of them
    fails."""
    env = dict(os.environ) | (extra_env or {})
    # One process per core share: N processes each using every core would oversubscribe the CPU.
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores() // nproc)))  # each rank's own rule: archc.threads
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(torchrun_command(nproc, args, nodes), env=env, stderr=subprocess.PIPE,
                            preexec_fn=die_with_parent(os.getpid()))
    try:
        report = relay_stderr(proc.stderr, sys.stderr.buffer)
        code = proc.wait()
    except BaseException:  # Ctrl-C reaches torchrun and its workers too (one process group): let them finish
        proc.wait()
        raise
    if code == 0:
        return
    if report.errors:  # the ranks' own clear messages, each once, are the whole report
        raise ErrorList([ArchcError(text) for text in dict.fromkeys(report.errors)])
    where = f"--nproc {nproc}" + (f" --node-rank {nodes.rank}" if nodes.count > 1 else "")
    raise ArchcError(f"distributed training failed: {report.cause or f'torchrun exited with status {code}'}",
                     where=where, hint="the messages above say which rank failed and why")


# torchrun's own log lines ("W1127 09:05:29.448000 3276 [.../site-packages/]torch/distributed/...] ...").
_TORCHRUN_LOG = re.compile(rb"^[DIWEF]\d{4} [\d:.]+ \d+ \S*torch/distributed/")
_FAILED = re.compile(rb"failed \(exitcode: (-?\d+)\) local_rank: (\d+)")


@dataclass
class Relayed:
    errors: list[str] = field(default_factory=list)  # the ranks' `error: ...` lines, without the prefix
    cause: str = ""


def relay_stderr(src, dst) -> Relayed:
    """Copy the workers' stderr through, minus torchrun's own log lines and, once torchrun has seen a worker
    fail, the traceback and failure box it prints: the workers' messages are the ones a user needs. Their
    `error: ...` lines are kept back and returned, so the launcher reports each once (as JSON with --json)."""
    out, failed = Relayed(), False
    for line in iter(src.readline, b""):
        if failed:
            continue
        if m := _FAILED.search(line):
            failed, code = True, int(m.group(1))
            name = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else ""
            out.cause = (f"rank {int(m.group(2))} was killed by {name}" if name
                         else f"rank {int(m.group(2))} exited with status {code}")
            continue
        if _TORCHRUN_LOG.match(line):
            continue
        if line.startswith(b"error: "):
            out.errors.append(line[len(b"error: "):].decode("utf-8", "replace").rstrip("\n"))
            continue
        dst.write(line)
        dst.flush()
    return out
