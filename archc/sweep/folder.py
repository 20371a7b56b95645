"""The sweep folder (its layout: the one place that names its files) and the sweep as run. No torch, no optuna.

  study.db       Optuna's study (SQLite, its RDB storage): every trial's values, state, epochs and result
  sweep.json     the sweep's spec (its [sweep] table included), its hash, metric and direction: what --resume checks
  trial-NNNN/    one run folder per trial (`archc train`'s files; spec.json: the trial's spec, its values written
                 in), plus trial.json: the trial's number, state (complete, pruned, failed), values and value
  results.csv, results.json   one row per trial (rewritten after each)
  trials.png     trial number against the metric, the best so far as a line
  best.json      the best trial's spec: trains as it is (`archc train DIR/best.json`)
  .archc.lock    the pid of the sweep writing the folder
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILES = {"study": "study.db", "sweep": "sweep.json", "results_csv": "results.csv", "results_json": "results.json",
         "plot": "trials.png", "best": "best.json"}
TRIAL_FILE = "trial.json"  # in each trial's run folder: what the sweep made of it
INTERRUPTED = "interrupted"  # the state (an Optuna user attribute) of a trial running when the sweep was killed


@dataclass(frozen=True)
class SweepDir:
    """One sweep folder: the path of every file."""

    root: Path

    def path(self, role: str) -> Path:
        return self.root / FILES[role]

    def trial(self, number: int) -> Path:
        """The run folder of trial `number`: DIR/trial-0007."""
        return self.root / f"trial-{number:04d}"

    @property
    def storage(self) -> str:
        """Optuna's storage URL of the study (an absolute path: worker processes may run elsewhere)."""
        return f"sqlite:///{self.path('study').resolve()}"


@dataclass
class Sweep:
    """A sweep as run: the spec, its folder, the task's metric and direction, and the options."""

    file: str
    raw: dict[str, Any]
    space: dict[str, Any]        # target -> Range
    folder: SweepDir
    metric: str
    maximize: bool
    sha256: str
    data_root: str | None
    device: str = "auto"
    threads: int | None = None
    store: Any = None            # the study's Optuna storage, once opened


def beside(raw: dict[str, Any], sweep: Sweep, folder: Path) -> dict[str, Any]:
    """`raw` with a relative data path rewritten to be read from `folder` (where its spec is written): a trial's
    spec.json and best.json train as they are, from any working folder."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), str):
        from archc.data.sources import rebased

        raw["data"] = data | {"source": rebased(data["source"], sweep.data_root, folder)}
    return raw
