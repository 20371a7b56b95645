"""`archc train`: the spec's [train] and [data] recipe, run to a folder of artifacts (imports torch when run)."""
from __future__ import annotations

from archc.train.api import run
from archc.train.run_dir import RunResult

__all__ = ["RunResult", "run"]
