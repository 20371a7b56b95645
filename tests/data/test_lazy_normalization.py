"""A lazy split's normalization statistics are read a chunk at a time (archc.data.dataset.LAZY_CHUNK examples),
never the whole sample at once (4,096 images of 3x224x224 are 2.4 GB decoded), and equal the in-memory
computation's to float64 rounding."""
from __future__ import annotations

import numpy as np
import pytest

from archc.data import dataset as ds
from archc.data.dataset import Split, normalization
from archc.data.lazy import Lazy


class ArrayReader:
    """Examples of an array, read one at a time (as an image folder's reader does)."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def __len__(self) -> int:
        return len(self.a)

    def read(self, i: int) -> np.ndarray:
        return self.a[i]

    def where(self, i: int) -> str:
        return f"example {i}"


class Counting(Lazy):
    """A Lazy that records how many examples each batch read asked for."""

    asked: list[int] = []

    def __getitem__(self, key):
        out = super().__getitem__(key)
        Counting.asked.append(len(out) if out.ndim == len(self.shape) else 1)
        return out


@pytest.mark.parametrize("shape", [(3, 6, 5), (7,)])
def test_lazy_statistics_match_the_array_and_read_in_chunks(shape) -> None:
    rng = np.random.default_rng(0)
    n = 3 * ds.LAZY_CHUNK + 17
    a = (rng.standard_normal((n, *shape)) * rng.uniform(0.1, 5, shape[:1])[(None, slice(None)) + (None,) *
         (len(shape) - 1)] + 3).astype(np.float32)
    Counting.asked = []
    lazy = Counting(ArrayReader(a), shape, np.float32)
    got = normalization(Split(lazy, np.zeros(n, dtype=np.int64)))
    want = normalization(Split(a, np.zeros(n, dtype=np.int64)))
    assert got["per"] == want["per"]
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["std"], want["std"], rtol=1e-12)
    assert Counting.asked and max(Counting.asked) <= ds.LAZY_CHUNK and sum(Counting.asked) == n


def test_lazy_sample_is_drawn_from_a_large_split(monkeypatch) -> None:
    """Past NORMALIZATION_SAMPLE examples the statistics come from a seeded sample of that many."""
    monkeypatch.setattr(ds, "NORMALIZATION_SAMPLE", 300)
    a = np.random.default_rng(1).uniform(0, 1, (1000, 2, 3, 3)).astype(np.float32)
    Counting.asked = []
    lazy = Counting(ArrayReader(a), (2, 3, 3), np.float32)
    got = normalization(Split(lazy, np.zeros(1000, dtype=np.int64)), seed=4)
    assert sum(Counting.asked) == 300
    pick = np.sort(np.random.default_rng(4).permutation(1000)[:300])
    want = normalization(Split(a[pick], np.zeros(300, dtype=np.int64)))
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12)
    np.testing.assert_allclose(got["std"], want["std"], rtol=1e-12)
