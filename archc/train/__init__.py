"""`archc train`: the spec's [train] and [data] recipe, run to a folder of artifacts (imports torch when run).

`run` and `RunResult` are loaded when first used: importing archc.train.command (the click command, which every
`archc` invocation registers) must not import the compiler."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archc.train.api import run
    from archc.train.run_dir import RunResult

__all__ = ["RunResult", "run"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from archc.train.api import run

        return run
    if name == "RunResult":
        from archc.train.run_dir import RunResult

        return RunResult
    raise AttributeError(f"module 'archc.train' has no attribute {name!r}")
