"""`archc sweep`: a search over the spec's [sweep] table on Optuna, each trial a normal run folder.

`run` is loaded when first used: importing archc.sweep.command (which every `archc` invocation registers) must not
import optuna, torch or the compiler."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archc.sweep.study import run

__all__ = ["run"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from archc.sweep.study import run

        return run
    raise AttributeError(f"module 'archc.sweep' has no attribute {name!r}")
