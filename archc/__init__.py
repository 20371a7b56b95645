"""archc: a declarative architecture compiler (TOML/JSON spec -> PyTorch -> ONNX -> ONNX Runtime).

Importing archc does not import torch: `validate`, `schema`, `ops` and `infer` stay fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from archc.version import __version__  # noqa: F401

if TYPE_CHECKING:
    from torch import fx


def compile(spec: str | Path | dict[str, Any], seed: int | None = 0) -> "fx.GraphModule":  # noqa: A001
    """Spec (path or dict) -> an initialized torch module whose parameters match the shape rules.

    The pipeline's torch-free passes, then `lower` (archc/pipeline.py)."""
    from archc.pipeline import PASSES, BuildOptions, compiled_from, lower, run

    return run(compiled_from(spec, options=BuildOptions(seed=seed)), [*PASSES, ("lower", lower)]).module
