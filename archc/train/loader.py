"""A split whose examples are read per batch (archc.data.lazy's `Lazy`): a torch DataLoader over the loop's own
batches, with worker processes that decode ahead, pinned memory and prefetch.

The loop still decides every batch: the epoch's order and each rank's share come from archc.train.batches, and the
loader is handed that plan as its batch sampler, so the order does not depend on the workers, and a run resumed in
the middle of an epoch reads the remaining batches of the same plan. Workers only read; augmentation runs on the
device afterwards, keyed by the batch (archc.train.splits.Feed), and the loader draws its own seeds from a private
generator, never from the global one that dropout uses. An example that cannot be read stops the run with its file
named ([data] on_error = "stop"), or is left out of its batch and counted ("skip"); a worker the OS kills is
reported as such, not waited on.
"""
from __future__ import annotations

import os
import re
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from archc.data.lazy import Lazy
from archc.errors import ArchcError, DataError
from archc.data.dataset import Split
from archc.train.splits import DeviceSplit, Feed, as_tensor, ids

PREFETCH = 2  # batches each worker reads ahead


def default_workers(world: int = 1) -> int:
    """Loader workers when [data] workers is not set: the cores this process may use less one (the training
    process's own), at most 8, shared out over the ranks of a --nproc run."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(0, min(8, cores // max(world, 1) - 1))


class _Reads(torch.utils.data.Dataset):
    """What a worker runs: one batch of positions read into one array; unreadable examples reported, not raised
    (an exception crossing the worker boundary loses its type and arrives as a traceback)."""

    def __init__(self, x: Lazy) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitems__(self, positions: list[int]) -> tuple[np.ndarray, list[int], list[str]]:
        out = np.empty((len(positions), *self.x.example_shape), dtype=self.x.dtype)
        kept: list[int] = []
        errors: list[str] = []
        for p in positions:
            try:
                out[len(kept)] = self.x.read(p)
            except DataError as e:
                errors.append(f"{e.where}: {e.message}" if e.where else e.message)
                continue
            kept.append(p)
        return out[:len(kept)], kept, errors


def _collate(batch: tuple[np.ndarray, list[int], list[str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    x, kept, errors = batch
    return torch.from_numpy(x), torch.tensor(kept, dtype=torch.int64), errors


class _Plan:
    """The batch sampler: the index batches the loop asked for, set before each pass (the workers persist)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class LoaderSplit:
    """A lazy split: x read per batch by `workers` processes, y (n, ...) in memory, both placed on `device` and
    passed through `feed`."""

    x: Lazy
    y: torch.Tensor
    device: torch.device
    feed: Feed | None = None
    workers: int = 0
    on_error: str = "stop"
    skipped: list[str] = field(default_factory=list)  # what "skip" left out so far (the loop reports it)
    eval_batch: int = 256  # examples per evaluation batch (decoded images are large; the in-memory default is 1024)
    _loader: Any = None
    _plan: _Plan | None = None

    def __len__(self) -> int:
        return len(self.x)

    def loader(self) -> tuple[torch.utils.data.DataLoader, _Plan]:
        if self._loader is None:
            self._plan = _Plan()
            workers = self.workers
            self._loader = torch.utils.data.DataLoader(
                _Reads(self.x), batch_sampler=self._plan, collate_fn=_collate, num_workers=workers,
                pin_memory=self.device.type == "cuda", prefetch_factor=PREFETCH if workers else None,
                persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
        assert self._plan is not None
        return self._loader, self._plan

    def take(self, idx: torch.Tensor, key: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at `idx`, read in this process."""
        return next(self.batches([idx], [key]))

    def batches(self, plan: Iterable[torch.Tensor], keys: Iterable[int | None]) -> Iterator[tuple[Any, torch.Tensor]]:
        """(x, y) of every index batch in `plan`, read ahead by the workers, in order."""
        plan, keys = list(plan), list(keys)
        loader, sampler = self.loader()
        sampler.batches = [idx.tolist() for idx in plan]
        try:
            with _sigchld_kept():
                it = iter(loader)  # persistent workers: resumed here, so a dead one is found here too
        except (RuntimeError, OSError, EOFError) as e:
            raise worker_died(e, _dead(loader)) from None
        for idx, key in zip(plan, keys):
            try:
                x, kept, errors = next(it)
            except (RuntimeError, OSError, EOFError) as e:
                raise worker_died(e, _dead(loader)) from None
            if errors:
                if self.on_error == "stop":
                    raise DataError(f"{errors[0]}; stopped at this example",
                                    hint="the checkpoints written so far are kept: fix or remove the file and "
                                         "--resume, or set [data] on_error = \"skip\"")
                self.skipped.extend(errors)
                if not len(kept):
                    yield None, None  # every example of the batch left out: the step is skipped
                    continue
            y = self.y[kept]
            x = x.to(self.device, non_blocking=True)
            y = ids(y.to(self.device, non_blocking=True))
            yield self.feed(x, y, key) if self.feed is not None else (x, y)

    def close(self) -> None:
        """Stop the workers (they persist between epochs)."""
        loader, self._loader = self._loader, None
        if loader is not None and getattr(loader, "_iterator", None) is not None:
            loader._iterator._shutdown_workers()


@contextmanager
def _sigchld_kept() -> Iterator[None]:
    """torch's DataLoader installs a SIGCHLD handler that raises RuntimeError in whatever the training process runs
    when a worker dies: inside an import, a checkpoint write or an `except Exception` that reports something else.
    The handler this process had is put back, so a dead worker is found where the loader is read (torch checks its
    workers whenever it waits on them) and reported there (worker_died)."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGCHLD) if main and hasattr(signal, "SIGCHLD") else None
    try:
        yield
    finally:
        if before is not None:
            signal.signal(signal.SIGCHLD, before)


def _dead(loader: torch.utils.data.DataLoader) -> list[int]:
    """Pids of the loader's workers that are no longer running."""
    workers = getattr(getattr(loader, "_iterator", None), "_workers", None) or []
    return [w.pid for w in workers if not w.is_alive()]


def worker_died(e: BaseException, dead: list[int]) -> ArchcError:
    """The DataLoader's report of a worker that exited (killed by the OS, out of memory), or the broken pipe or end
    of file its death left, as one clear error; anything else is raised as it is."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if not dead and not re.match(r"DataLoader worker \(pid", text):  # 'Caught X in DataLoader worker': its own error
        raise e
    if dead and "DataLoader worker" not in text:
        text = f"worker pid(s) {', '.join(map(str, dead))} exited: {type(e).__name__}: {text}"
    return ArchcError(f"a data loader worker process stopped unexpectedly ({text}); the checkpoints written so far "
                      "are kept", where="data",
                      hint="the system may have run out of memory: lower [data] workers (0 reads in the training "
                           "process) or the batch size, then --resume")


def examples_of(split: Split, device: torch.device, feed: Feed | None = None, workers: int = 0,
                on_error: str = "stop") -> "DeviceSplit | LoaderSplit":
    """A split as the loop reads it: arrays on the device (DeviceSplit), or a lazy source's examples read per batch
    by `workers` processes (LoaderSplit)."""
    if not isinstance(split.x, Lazy):
        return DeviceSplit.of(split, device, feed)
    return LoaderSplit(split.x, as_tensor(split.y), device,
                       feed if feed is not None and (feed.augment or feed.normalize) else None, workers, on_error)
