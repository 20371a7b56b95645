"""The run folder: its layout (the one place that names its files), preparing it, and the run's result (no torch).

Files, each written atomically (temporary file, fsync, rename):
  spec.json                the spec as used (flags applied): what --resume checks and what --nproc workers read
  checkpoint.safetensors   the latest weights          best.safetensors   the best validation epoch's weights
  train_state.safetensors  everything --resume needs   train_state.json   a readable copy of its scalars
  metrics.jsonl            one row per epoch           curves.png         train and validation curves
  model.onnx               the exported best weights   result.json        the summary (RunResult)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from archc import strict_json
from archc.errors import InputError
from archc.util import write_text_atomic


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

    def to_json(self) -> str:
        return strict_json.dumps(asdict(self), indent=2)  # --json and result.json: NaN as null

    @classmethod
    def from_json(cls, text: str) -> "RunResult":
        return cls(**json.loads(text))


@dataclass(frozen=True)
class RunDir:
    """One run folder: the path of every artifact, the checks and preparation before a run, the result after."""

    root: Path

    # The artifacts by role (RunResult.paths keys), in the order a fresh run deletes them: the state before the
    # result, so a rank that looks meanwhile never sees "a state without a result" (an unfinished run) where
    # there was a finished one. spec.json is not deleted but replaced atomically, so a --nproc worker reading it
    # while rank 0 prepares the folder always finds it.
    FILES = {"train_state": "train_state.safetensors", "train_state_json": "train_state.json",
             "checkpoint": "checkpoint.safetensors", "best": "best.safetensors", "metrics": "metrics.jsonl",
             "curves": "curves.png", "onnx": "model.onnx", "result": "result.json", "spec": "spec.json"}

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def path(self, role: str) -> Path:
        return self.root / self.FILES[role]

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

    def check(self, resume: bool) -> None:
        """The folder fits the request: --resume needs a state; a fresh run must not bury an unfinished one."""
        has_state, done = self.state.exists(), self.result.exists()
        if resume and not has_state:
            raise InputError(f"--resume: expected a checkpoint in {str(self.root)!r}, received none "
                             f"({self.FILES['train_state']} is missing)", where="--resume",
                             hint="train without --resume first")
        if not resume and has_state and not done:
            raise InputError(f"{str(self.root)!r} holds an unfinished run", where="--out",
                             hint="pass --resume to continue it, or choose another --out")

    def prepare(self, raw: dict[str, Any], resume: bool) -> None:
        """Rank 0: check, create, clear what a killed writer or an earlier run left, write the spec as used."""
        self.check(resume)
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in self.root.glob(".*.tmp"):  # left by a process killed while writing (archc.util's atomic writes)
            tmp.unlink(missing_ok=True)
        if not resume:
            for role in self.FILES:
                if role != "spec":
                    self.path(role).unlink(missing_ok=True)
        write_text_atomic(self.spec, json.dumps(raw, indent=2) + "\n")

    # --- during and after -----------------------------------------------------------------------------------

    def write_metrics(self, history: list[dict]) -> None:
        """metrics.jsonl: one JSON object per epoch (rewritten atomically, so a resumed run never repeats one)."""
        write_text_atomic(self.metrics, "".join(json.dumps(row) + "\n" for row in history))

    def paths(self) -> dict[str, str]:
        """The artifacts RunResult lists, by role."""
        return {role: str(self.path(role)) for role in ("spec", "checkpoint", "best", "train_state", "metrics",
                                                         "curves", "onnx", "result")}

    def write_result(self, result: RunResult) -> None:
        """result.json, written last: its presence marks the run finished."""
        write_text_atomic(self.result, result.to_json() + "\n")

    def read_result(self) -> RunResult:
        return RunResult.from_json(self.result.read_text())
