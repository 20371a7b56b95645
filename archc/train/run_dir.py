"""The run folder: its layout (the one place that names its files), preparing it, and the run's result (no torch).

Files, each written atomically (temporary file, fsync, rename):
  spec.json                the spec as used (flags applied): what --resume checks and what --nproc workers read
  checkpoint.safetensors   the latest weights          best.safetensors   the best validation epoch's weights
  train_state.safetensors  everything --resume needs   train_state.json   a readable copy of its scalars
  metrics.jsonl            one row per epoch           curves.png         train and validation curves
  steps.jsonl              the training curve within epochs (about 50 points per epoch, rank 0's examples)
  model.onnx               the exported best weights   result.json        the summary (RunResult)
  export.json              the ONNX metadata the data gave (preprocessing, tokenizer): what `archc export` adds
  tokenizer.json           a text: source's ?tokenizer= file, which archc.tokenizer names (`archc export` copies it)
  report.json, report.png  model.onnx on the test split (per-class precision/recall/F1 and confusion matrix, or
                           residuals), as `archc infer model.onnx --input SOURCE --report DIR` writes it
  tracking.json            the ids of the run's MLflow and W&B runs (archc.train.tracking), which --resume continues
  tensorboard/, wandb/     TensorBoard's event files, W&B's offline run (folders: moved aside by --force with the files)
  train_state.dcp/         [train] strategy = "fsdp": the weights and optimizer state, sharded (torch.distributed.
                           checkpoint), one step-N-T folder; train_state.safetensors names the complete one
  .archc.lock              the pid of the run writing the folder (created with O_EXCL, removed at the end)

A run never deletes what it did not write: a finished or unfinished run is refused unless --resume continues it
or --force moves its files aside to DIR.old-N; files a user put in the folder are left alone, and only archc's
own temporary files (.<artifact name>.<random>.tmp, archc.util's atomic writes) are cleared.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from archc import strict_json
from archc.errors import InputError, ModelError
from archc.outputs import LOCK, RUN_FILES, holder, read_lock
from archc.util import write_text_atomic

# The launcher of --nproc holds the lock for its workers: it passes its pid here, and rank 0 does not lock again.
LOCK_ENV = "ARCHC_RUN_LOCK_PID"


def say(text: str) -> None:
    """A note on stderr that --quiet does not hide: what happened to the run folder."""
    print(f"archc: {text}", file=sys.stderr, flush=True)


@dataclass
class RunResult:
    """What `archc train` produced: the run folder, the best/final/test metrics and the artifacts' paths."""

    run_dir: str
    metric: str                                   # the task's metric: "accuracy", "mae", ...
    epochs_run: int
    best_epoch: int | None
    best: dict[str, float]                        # the epoch row of the best checkpoint
    final: dict[str, float]                       # the last epoch's row
    test: dict[str, float]                        # {"loss": .., metric: .., "examples": ..} of the best weights
    stopped_early: bool
    seconds: float
    paths: dict[str, str] = field(default_factory=dict)
    labels: list[str] | None = None               # the model's class names in output order (as in model.onnx)
    threads: int | None = None                    # torch threads the training process computed with (archc.threads)
    baselines: dict | None = None                 # tabular runs: reference scores on the test split (train.baselines)
    # each rank's peak memory over its training (epochs and validation, before the test split and the export), bytes
    # in rank order: {"rss": [...]} (the process's peak resident set), plus "cuda": [...] (torch's peak allocation)
    peak_memory: dict | None = None

    def to_json(self) -> str:
        return strict_json.dumps(asdict(self), indent=2)  # --json and result.json: NaN as null

    @classmethod
    def from_json(cls, text: str) -> "RunResult":
        return cls(**json.loads(text))


@dataclass(frozen=True)
class RunDir:
    """One run folder: the path of every artifact, the checks and preparation before a run, the result after."""

    root: Path

    # The artifacts by role (RunResult.paths keys), in the order a fresh run deletes them: archc.outputs holds the
    # table (its check that no other command replaces them reads it without importing archc.train)
    FILES = RUN_FILES

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def path(self, role: str) -> Path:
        return self.root / self.FILES[role]

    def folder(self, role: str) -> Path:
        """One of the run's folders (FOLDERS): TensorBoard's event files, W&B's offline run."""
        return self.root / self.FOLDERS[role]

    @property
    def spec(self) -> Path:
        return self.path("spec")

    @property
    def weights(self) -> Path:
        return self.path("checkpoint")

    @property
    def best(self) -> Path:
        return self.path("best")

    @property
    def state(self) -> Path:
        return self.path("train_state")

    @property
    def state_json(self) -> Path:
        return self.path("train_state_json")

    @property
    def metrics(self) -> Path:
        return self.path("metrics")

    @property
    def curves(self) -> Path:
        return self.path("curves")

    @property
    def onnx(self) -> Path:
        return self.path("onnx")

    @property
    def result(self) -> Path:
        return self.path("result")

    # --- before a run ---------------------------------------------------------------------------------------

    LOCK = LOCK

    @property
    def lock_path(self) -> Path:
        return self.root / self.LOCK

    def check(self, resume: bool, force: bool = False) -> None:
        """Read-only, before any data is read: a fresh run never replaces a finished or unfinished run, nor a
        file a run killed before its first checkpoint could not have left, unless --force moves it aside; a
        resumed run finds every file it writes writable (not a folder), so it cannot train and then fail."""
        where, root = "--out", str(self.root)
        if resume and self.state.exists():
            blocked = [p for p in self.present() if not p.is_file()]
            if blocked:
                raise InputError(f"expected the run's files in {root!r}, received a folder (or other non-file) "
                                 f"at {str(blocked[0])!r}, where the run writes its {blocked[0].name}",
                                 where=where, hint="move it away, then --resume again")
            return
        if force:
            return
        choices = f"choose another --out, or pass --force to move its files to {str(self.aside())!r} first"
        if self.result.exists():
            if resume:  # its state was removed: nothing to continue, and a fresh start would bury the result
                raise InputError(f"{root!r} holds a finished run ({self.FILES['result']}) without its "
                                 f"{self.FILES['train_state']}: --resume has nothing to continue", where=where,
                                 hint=choices)
            raise InputError(f"{root!r} holds a finished run ({self.FILES['result']})", where=where,
                             hint=f"{choices}, or --resume to re-export it")
        if self.state.exists():
            raise InputError(f"{root!r} holds an unfinished run", where=where,
                             hint=f"pass --resume to continue it, or {choices}")
        foreign = self.foreign()
        if foreign:
            raise InputError(f"{root!r} holds {', '.join(repr(p.name) for p in foreign[:4])}, which no "
                             f"interrupted run of archc train leaves", where=where, hint=choices)

    # What a run killed before its first checkpoint (train_state) leaves: prepare clears them. Anything else of
    # archc's names in a folder without a state or result was put there by a user or another command.
    LEFTOVERS = ("spec", "export", "best", "tracking")
    # Folders of a run (archc.train.tracking's TensorBoard events): not artifacts a role names, but moved aside with
    # them by --force so that the earlier run's curves go with it
    FOLDERS = {"tensorboard": "tensorboard", "wandb": "wandb", "sharded": "train_state.dcp"}

    def present(self) -> list[Path]:
        """The artifacts that exist (files, or anything else at their names)."""
        return [self.path(role) for role in self.FILES if os.path.lexists(self.path(role))]

    def foreign(self) -> list[Path]:
        """In a folder without a state or result: the artifact names that a killed run cannot have left (any, when
        spec.json, which a run writes first, is missing; any that is not a plain file)."""
        if self.state.exists() or self.result.exists():
            return []
        left = self.LEFTOVERS if self.spec.is_file() else ()
        return [self.path(role) for role in self.FILES if os.path.lexists(self.path(role))
                and (role not in left or not self.path(role).is_file() or self.path(role).is_symlink())]

    def aside(self) -> Path:
        """The first free DIR.old-N: where --force moves an earlier run's files (nothing is deleted)."""
        n = 1
        while (old := self.root.with_name(f"{self.root.name}.old-{n}")).exists():
            n += 1
        return old

    def move_aside(self) -> Path | None:
        """--force: the earlier run's files (archc's own, by name) into DIR.old-N, which is a run folder itself."""
        if not (self.state.exists() or self.result.exists() or self.foreign()):
            return None
        present = self.present() + [self.folder(role) for role in self.FOLDERS if self.folder(role).is_dir()]
        old = self.aside()
        old.mkdir(parents=True)
        for path in present:
            os.replace(path, old / path.name)
        say(f"--force: moved the earlier run in {str(self.root)!r} to {str(old)!r}")
        return old

    def lock(self) -> bool:
        """Create the lock file (O_EXCL) holding our pid; a live holder is an error, a dead one's lock is taken
        over. False when the --nproc launcher holds it for us: rank 0 adds its pid (a --resume after the
        launcher was killed waits for the workers too) and has nothing to release."""
        path = self.lock_path
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pids, foreign = read_lock(path)
                if pids and str(pids[0]) == os.environ.get(LOCK_ENV):
                    with path.open("a") as f:
                        f.write(f"{os.getpid()}\n")
                    return False
                self.refuse_if_held()
                say(f"{str(path)!r}: taking over " + (f"the lock of pid {pids[0]}, which no longer runs" if pids else
                                                     f"a lock that holds {foreign}, no process id" if foreign else
                                                     "an empty lock, whose run no longer writes"))
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return True
        raise InputError(f"{str(self.root)!r} is in use: its lock keeps being taken", where="--out",
                         hint="choose another --out")

    def refuse_if_held(self) -> None:
        """InputError when a pid in the lock lives, or when the lock is empty but new (its writer is starting);
        a lock holding anything but pids is a foreign one, not refused (archc.outputs.holder)."""
        who = holder(self.root)
        if who is not None:
            raise InputError(f"{str(self.root)!r} is in use: another archc train ({who}) is writing it",
                             where="--out", hint=f"wait for it to end or choose another --out; if no run is "
                             f"writing there, remove {str(self.lock_path)!r}")

    def lock_pids(self) -> list[int]:
        """The pids in the lock file (the holder first); [] when it is missing, empty or not archc's."""
        return read_lock(self.lock_path)[0]

    def unlock(self) -> None:
        """Remove the lock when it is ours."""
        if self.lock_pids()[:1] == [os.getpid()]:
            self.lock_path.unlink(missing_ok=True)

    def temporaries(self) -> list[Path]:
        """archc's own temporary files (archc.util's `.NAME.RANDOM.tmp`, NAME an artifact), left by a kill."""
        names = "|".join(re.escape(name) for name in self.FILES.values())
        pattern = re.compile(rf"\.({names})\.[A-Za-z0-9_]+\.tmp")
        return [p for p in self.root.glob(".*.tmp") if pattern.fullmatch(p.name)]

    def prepare(self, raw: dict[str, Any], resume: bool, force: bool = False) -> "Claim":
        """Rank 0, once data and spec are checked: create and lock the folder, check it, move an earlier run
        aside (--force), clear archc's leftovers, write the spec as used. Whether a state is there to resume."""
        self.root.mkdir(parents=True, exist_ok=True)
        claim = Claim(self, self.lock(), resume and self.state.exists())
        try:
            self.check(resume, force)
            for tmp in self.temporaries():
                tmp.unlink(missing_ok=True)
            if not claim.resuming:
                self.move_aside()  # --force's earlier run (check let nothing else with a state or result through)
                for role in self.FILES:  # what is left is from a run killed before its first checkpoint
                    if role != "spec":
                        self.path(role).unlink(missing_ok=True)
            if resume and not claim.resuming:
                say(f"--resume: no checkpoint in {str(self.root)!r} yet; starting from step 0")
            write_text_atomic(self.spec, json.dumps(raw, indent=2) + "\n")
        except BaseException:
            claim.release()
            raise
        return claim

    # --- during and after -----------------------------------------------------------------------------------

    def write_metrics(self, history: list[dict]) -> None:
        """metrics.jsonl: one JSON object per epoch (rewritten atomically, so a resumed run never repeats one)."""
        write_text_atomic(self.metrics, "".join(json.dumps(row) + "\n" for row in history))

    def write_steps(self, rows: list[dict]) -> None:
        """steps.jsonl: the per-step training curve, one JSON object per point (rewritten atomically)."""
        write_text_atomic(self.path("steps"), "".join(json.dumps(row) + "\n" for row in rows))

    def read_steps(self, upto: int) -> list[dict]:
        """The points steps.jsonl holds up to global step `upto` (what a resumed run continues); none when the file
        is missing or not archc's: it is a log for plots, never the state a run continues from."""
        try:
            lines = self.path("steps").read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines if line.strip()]
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            return []
        if not all(isinstance(r, dict) and type(r.get("step")) is int for r in rows):
            return []
        return [r for r in rows if r["step"] <= upto]

    def paths(self) -> dict[str, str]:
        """The artifacts RunResult lists, by role."""
        return {role: str(self.path(role)) for role in ("spec", "checkpoint", "best", "train_state", "metrics",
                                                         "steps", "curves", "onnx", "result")}

    def onnx_of(self, checkpoint: str | None) -> Path:
        """Where `archc export` writes a checkpoint's model by default: model.onnx for the best weights (what the
        run itself writes), model-<checkpoint>.onnx for others."""
        onnx = self.onnx
        return onnx if checkpoint is None else onnx.with_name(f"{onnx.stem}-{checkpoint}{onnx.suffix}")

    def write_export_metadata(self, metadata: dict[str, Any]) -> None:
        """export.json: the data's part of the ONNX metadata, written as the run starts (`archc export` reads it)."""
        write_text_atomic(self.path("export"), strict_json.dumps(metadata, indent=2) + "\n")

    def write_files(self, files: dict[str, str]) -> None:
        """Files the task's metadata names (a tokenizer.json), beside model.onnx; written as the run starts."""
        for name, text in files.items():
            write_text_atomic(self.root / name, text)

    def read_json(self, role: str) -> dict[str, Any]:
        """One of the run's JSON files as a dict; ModelError naming it when it cannot be read as one."""
        path = self.path(role)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ModelError(f"expected a JSON object archc wrote, received a file that cannot be read as one "
                             f"({type(e).__name__})", file=str(path)) from None
        if not isinstance(value, dict):
            raise ModelError(f"expected a JSON object archc wrote, received {type(value).__name__}", file=str(path))
        return value

    def write_result(self, result: RunResult) -> None:
        """result.json, written last: its presence marks the run finished."""
        write_text_atomic(self.result, result.to_json() + "\n")

    def read_result(self) -> RunResult:
        """The run's result.json; ModelError when it is missing, unreadable or not a result archc wrote."""
        try:
            return RunResult.from_json(self.result.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, TypeError, RecursionError) as e:
            first = str(e).splitlines()[0][:200] if str(e) else ""
            raise ModelError(f"expected the run's result (a JSON object: run_dir, metric, best, test, ...), "
                             f"received a file that cannot be read as one ({type(e).__name__}: {first})",
                             file=str(self.result), hint="rerun the training (--force moves this run aside)") from None


@dataclass
class Claim:
    """A prepared run folder: whether we hold its lock, whether a state is there to resume."""

    run_dir: RunDir
    locked: bool
    resuming: bool

    def release(self) -> None:
        if self.locked:
            self.run_dir.unlock()
            self.locked = False
