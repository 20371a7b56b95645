"""The KV-cache file beside an exported language model (`model.kv.onnx`): find it, check it belongs to the
model, and run it step by step (numpy and ONNX Runtime only; archc/export/kvcache.py writes it)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archc.runtime.session import CUDA, Model
import archc.metadata as keys

SUFFIX = ".kv.onnx"
META_KEY = keys.KVCACHE
# Below this size of the weights (about 10M float32 parameters) a one-token decode step is a few hundred small
# kernels that one thread runs faster than two: gpt_stdlib (3.4 MB) generated 3267 vs 2388 tokens/s on 2 loaded cores.
ONE_THREAD_BYTES = 40 << 20


def weights_bytes(model_path: str | os.PathLike) -> int:
    """The exported model's size with its external data (the weights the cache file reads: it points into them, so
    its own size says nothing of the model's)."""
    p = Path(model_path)
    data = p.with_name(p.name + ".data")
    return p.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def cache_path(model_path: str | os.PathLike) -> Path:
    """model.onnx -> model.kv.onnx (model-last.onnx -> model-last.kv.onnx)."""
    p = Path(model_path)
    return p.with_name(p.name[: -len(".onnx")] + SUFFIX if p.name.endswith(".onnx") else p.name + SUFFIX)


def model_files(path: str | os.PathLike) -> list[Path]:
    """The files an ONNX export to `path` writes or replaces: the model, its external data and its KV cache."""
    p = Path(path)
    return [p, p.with_name(p.name + ".data"), cache_path(p)] if p.name else [p]


def file_sha256(path: str | os.PathLike) -> str:
    """The model file's digest: the cache file records it, so a cache left from an earlier export is not used."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class CachedLM:
    """The cache graph of one model: prefill (past length 0) and decode runs with past keys/values."""

    model: Model
    input: str
    output: str
    past: list[str]      # past.<i>.key, past.<i>.value, ... in the graph's input order
    shapes: list[tuple[int, int]]  # (kv_heads, head_dim) per past input
    max_positions: int | None

    @classmethod
    def open(cls, model: Model) -> tuple["CachedLM | None", str]:
        """The model's cache file, or None and why it is not used (no file, another model's, unreadable); opened
        once per Model (later calls reuse the session), so repeated generate() calls pay no setup."""
        found = getattr(model, "_kvcache", None)
        if found is None:
            found = model._kvcache = cls._open(model)  # type: ignore[attr-defined]
        return found

    @classmethod
    def _open(cls, model: Model) -> tuple["CachedLM | None", str]:
        if not model.path:
            return None, "no model file"
        path = cache_path(model.path)
        if not path.is_file():
            return None, f"no {path.name} beside the model"
        cuda = CUDA in model.providers
        small = not cuda and weights_bytes(model.path) < ONE_THREAD_BYTES
        kv = Model.open(path, device="cuda" if cuda else "cpu", threads=1 if small else model.threads)
        try:
            meta = json.loads(kv.metadata.get(META_KEY, ""))
            layers, heads, dims = int(meta["layers"]), meta["kv_heads"], meta["head_dim"]
            inp, out, sha = meta["input"], meta["output"], meta["model_sha256"]
        except (ValueError, KeyError, TypeError):
            return None, f"{path.name} has no valid {META_KEY} metadata"
        if sha != file_sha256(model.path):
            return None, f"{path.name} was exported with another {Path(model.path).name} (re-export to refresh it)"
        names = [f"past.{i}.{kv_}" for i in range(layers) for kv_ in ("key", "value")]
        shapes = [(int(heads[i]), int(dims[i])) for i in range(layers) for _ in range(2)]
        limit = meta.get("max_positions")
        return cls(kv, inp, out, names, shapes, int(limit) if isinstance(limit, int) else None), ""

    def empty(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, h, 0, d), np.float32) for h, d in self.shapes]

    def run(self, tokens: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(logits [batch, new, vocab], present keys/values) for new tokens [batch, new] after `past`."""
        feeds = {self.input: tokens, **dict(zip(self.past, past))}
        got = self.model.session.run(None, feeds)  # ORT's own order: the logits, then present.* as exported
        return got[0], got[1:]
