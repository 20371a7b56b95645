"""One trial of a sweep: the trial's spec trained as a normal run (archc.train.run), its validation metric reported
to Optuna after every epoch, and stopped when the pruner says so. Runs in the sweep's process or in a worker
process of `--parallel K`, which finds its Optuna trial again through the study's storage."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from archc.errors import ArchcError
from archc.sweep.folder import TRIAL_FILE
from archc.util import write_text_atomic

COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"  # a trial's end (Optuna's COMPLETE, PRUNED, FAIL)


class Pruned(Exception):
    """The pruner stopped the trial after `epoch` (its validation metric `value`): raised from the training loop's
    epoch hook, caught by the trial, so the loop knows nothing of sweeps."""

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch, self.value = epoch, value


@dataclass
class Job:
    """What a trial needs, picklable for a worker process."""

    number: int
    trial_id: int
    values: dict[str, Any]
    raw: dict[str, Any]          # the trial's spec: the sweep's with the values written in, no [sweep]
    run_dir: str
    storage: str                 # the study's Optuna storage URL and name
    study_name: str
    device: str = "auto"
    threads: int | None = None   # torch threads of the trial (--parallel K: the cores shared over K)
    data_root: str | None = None  # the folder the trial spec's relative data path is read from (its run folder)


@dataclass
class Outcome:
    """How a trial ended: its state, its value (the best epoch's validation metric; a pruned trial's last one)."""

    number: int
    state: str
    value: float | None = None
    epochs: int = 0
    seconds: float = 0.0
    test: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def run_job(job: Job, trial: Any = None) -> Outcome:
    """Train the trial's run folder; `trial` is its Optuna trial (None: found in the storage, in a worker).
    A user error of the run (data, divergence) fails the trial, not the sweep; a pruned run is not a failure."""
    if trial is None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        store = optuna.storages.RDBStorage(job.storage, engine_kwargs={"connect_args": {"timeout": 60}})
        study = optuna.load_study(study_name=job.study_name, storage=store, pruner=optuna.pruners.MedianPruner())
        trial = optuna.trial.Trial(study, job.trial_id)  # the trial the sweep asked for, through the storage
    from archc.language.model import Train
    from archc.train.api import run

    epochs = (job.raw.get("train") or {}).get("epochs", Train.model_fields["epochs"].default)

    def on_epoch(row: dict[str, Any], metric: str) -> None:
        value = row[f"val_{metric}"]
        trial.report(value, row["epoch"])
        if row["epoch"] < epochs and trial.should_prune():  # the last epoch is trained: finish, export, score
            raise Pruned(row["epoch"], value)

    start = time.perf_counter()
    outcome = Outcome(job.number, FAILED, values=job.values)
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)  # its spec's data path is relative to it: read through it
    try:
        result = run(job.raw, out=job.run_dir, device=job.device, quiet=True, data_root=job.data_root,
                     threads=job.threads, on_epoch=on_epoch)
    except Pruned as p:
        outcome.state, outcome.value, outcome.epochs = PRUNED, p.value, p.epoch
    except ArchcError as e:
        outcome.error = e.problems()[0].line()
    else:
        m = result.metric
        outcome.value, outcome.epochs, outcome.test = result.best.get(f"val_{m}"), result.epochs_run, result.test.get(m)
        outcome.state = COMPLETE
        if outcome.value is None or not math.isfinite(outcome.value):
            outcome.state, outcome.error = FAILED, f"no finite validation {m} (received {outcome.value})"
    outcome.seconds = round(time.perf_counter() - start, 3)
    mark(Path(job.run_dir), outcome)
    return outcome


def mark(run_dir: Path, outcome: Outcome) -> None:
    """trial.json in the trial's run folder: what the sweep made of it (a pruned run is marked so, not failed)."""
    if run_dir.is_dir():
        write_text_atomic(run_dir / TRIAL_FILE, json.dumps(asdict(outcome), indent=2) + "\n")


def worker_start() -> None:
    """A --parallel worker process ends with the sweep, even when the sweep is SIGKILLed (Linux's parent-death
    signal): a resumed sweep must not meet a trial still writing its folder."""
    import os

    from archc.train.distributed import die_with_parent

    arm = die_with_parent(os.getppid())
    if arm is not None:
        arm()
