"""How many threads a process computes with: training's and the export's torch, `archc infer`'s ONNX Runtime.

One rule for every command (no torch import here; `archc infer` must not load it):
- asked (`--threads N`, else `[train] threads`): exactly N, 1 to MAX_THREADS;
- else the cores this process may use (os.sched_getaffinity), shared out over the ranks of a `--nproc` run, less
  what its data loader's worker processes take (at most half of the rank's share), capped by OMP_NUM_THREADS and,
  for torch, by the count torch has (its default counts physical cores; calling code may have set fewer);
- and fewer when other work already holds the cores: `other` = the 1-minute load average less this process's own
  share of it; when fewer than the share's cores are left (cores - other, per rank), that many (rounded), at least
  BUSY_THREADS.
Why: on a shared 2-core machine with both cores busy, OpenMP's threads spin while they wait for each other and
the one that is descheduled holds the rest back. Issue 21 measured a small tabular model at 120-670 samples/s on
torch's default threads against 4,000-7,000 on one; benchmarks/bench_threads.py (figure 17), digits_mlp with one
busy loop per core on 2 cores: 438 samples/s on torch's 2 threads, 8,246 on this rule's 1 (0.87 of `--threads 1`).
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Iterator

MAX_THREADS = 1024  # what --threads and [train] threads accept at most (more is a typo, not a machine)
BUSY_THREADS = 1    # threads when other work already keeps every core busy
LOAD_WINDOW_S = 60.0  # the load average's time constant (its 1-minute figure)
MEASURE = object()  # choose()'s default load: this machine's, now


@dataclass(frozen=True)
class Choice:
    """A thread count and why: `asked` when the user named it (a flag or a spec key), else the rule's reason."""

    threads: int
    reason: str
    asked: bool = False

    def line(self) -> str:
        """'2 threads (2 cores)', as a run's header prints it."""
        return f"{self.threads} thread{'s' * (self.threads != 1)} ({self.reason})"


def check(n: object, where: str) -> int:
    """A user's thread count: an integer from 1 to MAX_THREADS, else InputError naming `where`."""
    from archc.errors import InputError

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise InputError(f"expected a thread count from 1 to {MAX_THREADS}, received {n!r}", where=where)
    return n


def cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's limit), else all."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def load() -> float | None:
    """The 1-minute load average, None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def own_load() -> float:
    """This process's own share of the 1-minute load average, estimated from its CPU time: a process that ran r
    threads for its t seconds adds about r * (1 - exp(-t / 60)) (0 where /proc cannot say when it started)."""
    t = _age()
    if not t:
        return 0.0
    busy = os.times()
    running = (busy.user + busy.system) / t
    return running * (1 - math.exp(-t / LOAD_WINDOW_S))


def _age() -> float | None:
    """Seconds since this process started (Linux's /proc), None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rpartition(")")[2].split()[19])  # field 22: start time in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - started / os.sysconf("SC_CLK_TCK"), 1e-3)
    except (OSError, ValueError, IndexError):
        return None


def env_cap() -> int | None:
    """OMP_NUM_THREADS when it is a positive integer (what the user or a launcher set for this process)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def choose(asked: int | None = None, *, where: str = "--threads", ranks: int = 1, workers: int = 0,
           cap: int | None = None, n_cores: int | None = None, load_now: float | None | object = MEASURE,
           own: float | None = None) -> Choice:
    """The threads for this process (the module's rule). `asked`: the user's count (`where` names the flag or key
    it came from); `ranks`: processes of a --nproc run sharing the machine; `workers`: this process's loader
    worker processes; `cap`: torch's count now (torch.get_num_threads(): its default, physical cores where it
    counts them, or what OMP_NUM_THREADS or the calling code set), never exceeded.
    `n_cores`, `load_now` (None: unknown) and `own` default to this machine's and process's (tests pass them)."""
    if asked is not None:
        return Choice(check(asked, where), where, asked=True)
    n = cores() if n_cores is None else n_cores
    share = max(1, n // max(ranks, 1))
    why = f"{n} core{'s' * (n != 1)}" + (f" / {ranks} processes" if ranks > 1 else "")
    if workers > 0:
        taken = min(workers, share // 2)
        share = max(1, share - taken)
        why += f", {workers} loader worker{'s' * (workers != 1)}" if taken else ""
    for limit, name in ((env_cap(), "OMP_NUM_THREADS = {}"), (cap, "torch at {}")):
        if limit is not None and limit < share:
            share, why = limit, f"{why}, {name.format(limit)}"
    current = load() if load_now is MEASURE else load_now
    if current is not None:
        other = current - (own_load() if own is None else own)
        free = (n - other) / max(ranks, 1)  # the cores other work leaves, this rank's part of them
        if free < share:
            share = max(BUSY_THREADS, min(share, math.floor(free + 0.5)))  # 1.7 free cores: 2 threads
            why = f"busy: load {current:.1f} on {n} core{'s' * (n != 1)}"
    return Choice(share, why)


# --- the choice in force -----------------------------------------------------------------------------------------

_in_force: list[Choice] = []  # the choices of the torch_threads blocks this process is inside, innermost last


def in_force() -> Choice | None:
    """The choice of the innermost torch_threads block this process is in, None outside one."""
    return _in_force[-1] if _in_force else None


def replace(choice: Choice) -> None:
    """Inside a torch_threads block: a new choice for the rest of it (the block still restores what was before)."""
    import torch

    if _in_force:
        torch.set_num_threads(choice.threads)
        _in_force[-1] = choice


def asked_in_force() -> Choice | None:
    """The user's own choice when a torch_threads block holds one (the export then keeps it), else None."""
    return next((c for c in reversed(_in_force) if c.asked), None)


@contextlib.contextmanager
def torch_threads(choice: Choice | None) -> Iterator[int]:
    """torch's intra-op threads set to the choice for the block (None: unchanged), restored after; yields the
    count torch reports inside (what a run records)."""
    import torch

    before = torch.get_num_threads()
    if choice is not None:
        torch.set_num_threads(choice.threads)
        _in_force.append(choice)
    try:
        yield torch.get_num_threads()
    finally:
        if choice is not None:
            _in_force.pop()
        torch.set_num_threads(before)


def for_export() -> Choice:
    """The export's threads: the user's choice in force, else the rule, never more than torch has now."""
    import torch

    return asked_in_force() or choose(cap=torch.get_num_threads())
