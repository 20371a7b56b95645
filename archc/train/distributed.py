"""Distributed training: `--nproc N` re-runs the command under torchrun; each process is one rank of a
DistributedDataParallel run (gloo on CPU, NCCL on CUDA). Rank 0 alone writes files and prints.

Multi-node runs use torchrun's own flags around the same module (see README):
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --master-port 29500 --nproc-per-node 8 \\
        -m archc.train SPEC --out runs/x
"""
from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from archc.errors import ArchcError, ErrorList
from archc.threads import cores


@dataclass
class Dist:
    """This process's place in the run: rank, world size, local rank (GPU index on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls) -> "Dist":
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (a plain process is rank 0 of 1)."""
        env = os.environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return cls()
        return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))

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


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc_per_node N -m archc.train ARGS`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
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


def launch(nproc: int, args: list[str], extra_env: dict[str, str] | None = None) -> None:
    """Run `archc train ARGS` as `nproc` local processes; ArchcError when any of them fails."""
    env = dict(os.environ) | (extra_env or {})
    # One process per core share: N processes each using every core would oversubscribe the CPU.
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores() // nproc)))  # each rank's own rule: archc.threads
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(torchrun_command(nproc, args), env=env, stderr=subprocess.PIPE,
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
    raise ArchcError(f"distributed training failed: {report.cause or f'torchrun exited with status {code}'}",
                     where=f"--nproc {nproc}", hint="the messages above say which rank failed and why")


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
