"""npz: sources whose y holds a row of targets per example (multi-value regression, multilabel 0/1 vectors)."""
from __future__ import annotations

import numpy as np
import pytest

from archc.data import load
from archc.errors import DataError


def test_two_dimensional_targets_load_for_regression_only(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((40, 3)).astype(np.float32),
             y=(rng.random((40, 2)) > 0.5).astype(np.int64))
    ds = load(f"npz:{tmp_path / 'd.npz'}", task="regression")
    assert ds.train.y.shape[1:] == (2,) and ds.train.y.dtype == np.float32
    assert len(ds.train) + len(ds.val) + len(ds.test) == 40
    with pytest.raises(DataError, match="one label"):  # class labels stay one per example
        load(f"npz:{tmp_path / 'd.npz'}")
