"""Training data sources (numpy only, no downloads): `load('scheme:argument')` → a split Dataset."""
from __future__ import annotations

from archc.data.dataset import Dataset, Split, check_shape, normalization
from archc.data.sources import load

__all__ = ["Dataset", "Split", "check_shape", "load", "normalization"]
