"""Training data sources (numpy only, no downloads): `load('scheme:argument')` → a split Dataset.

The source registry. Adding a source: write its module (one registered Source class), and import it here.
"""
from __future__ import annotations

from archc.data.base import REGISTRY, Example, Source, SourceOptions, Splits, register
from archc.data.dataset import Dataset, Split, check_shape, normalization
from archc.data.sources import load
from archc.data import sklearn_sets, idx, tabular, npz, images, text, gnn  # noqa: F401  (each registers its source)
from archc.data import jsonl, parquet  # noqa: F401

__all__ = ["REGISTRY", "Dataset", "Example", "Source", "SourceOptions", "Split", "Splits", "check_shape", "load",
           "normalization", "register"]
