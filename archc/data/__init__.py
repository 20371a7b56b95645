"""Training data sources (numpy only, no downloads): `load('scheme:argument')` → a split Dataset.

The source registry (archc/data/base.py). Adding a source: write its module (one registered Source class), and
name it in base.SOURCES. The names below are read on first use, so importing one module of archc.data (the runtime's
archc.data.lazy, a CSV reader) imports neither the others nor every source.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"REGISTRY": "base", "Example": "base", "Source": "base", "SourceOptions": "options", "Splits": "base",
          "register": "base", "Dataset": "dataset", "Split": "dataset", "check_shape": "dataset", "load": "sources",
          "normalization": "dataset"}

__all__ = ["REGISTRY", "Dataset", "Example", "Source", "SourceOptions", "Split", "Splits", "check_shape", "load",
           "normalization", "register"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'archc.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"archc.data.{_WHERE[name]}"), name)
