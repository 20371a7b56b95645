"""A safetensors file, checked before anything is allocated: the header's size, JSON, dtypes, shapes and offsets.

safetensors' own loader checks much of this too, but only as it maps tensors in; reading the header first lets
archc refuse a foreign or truncated file with one clear message, and compare every name and shape with the
model before a single tensor (possibly gigabytes) is read. Never pickle: no other format is accepted.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archc.errors import ModelError

MAX_HEADER = 100_000_000  # bytes of JSON header; safetensors itself refuses more
ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
              "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
FLOAT_DTYPES = frozenset({"F8_E4M3", "F8_E5M2", "F16", "BF16", "F32", "F64"})


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header declares it."""

    dtype: str              # safetensors' name: F32, BF16, I64, ...
    shape: tuple[int, ...]

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


def _bad(path: Path, what: str) -> ModelError:
    return ModelError(f"expected a safetensors file, received {what}", file=str(path),
                      hint="archc reads safetensors only (never pickle): save with safetensors' save_file")


def read_header(path: str | Path) -> dict[str, TensorInfo]:
    """The tensors a safetensors file declares, by name, after checking the header against the file's size."""
    path = Path(path)
    if path.is_dir():
        raise ModelError("expected a safetensors file, received a directory", file=str(path))
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > min(MAX_HEADER, size - 8):  # checked before reading (allocating) the header
                raise _bad(path, f"a file of {size:,} bytes whose first 8 bytes declare a header of {n:,} bytes")
            text = f.read(n)
    except OSError as e:
        raise ModelError(f"cannot read: {e.strerror or e}", file=str(path)) from None
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):
        raise _bad(path, "a header that is not JSON") from None
    if not isinstance(header, dict):
        raise _bad(path, "a header that is not a JSON object")
    return _tensors(path, header, size - 8 - n)


def _tensors(path: Path, header: dict[str, Any], data_bytes: int) -> dict[str, TensorInfo]:
    """Each entry's dtype, shape and byte range, checked against the data that follows the header."""
    out: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in ITEM_BYTES:
            raise _bad(path, f"tensor {name!r} with an unknown dtype {_dtype_of(entry)}")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise _bad(path, f"tensor {name!r} with shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise _bad(path, f"tensor {name!r} with data_offsets {offsets!r}")
        begin, end = offsets
        want = math.prod(shape) * ITEM_BYTES[entry["dtype"]]
        if not 0 <= begin <= end <= data_bytes or end - begin != want:
            raise _bad(path, f"tensor {name!r} {entry['dtype']} {shape} at bytes [{begin}, {end}) of "
                             f"{data_bytes:,} data bytes (it needs {want:,}): a truncated or corrupt file")
        out[name] = TensorInfo(entry["dtype"], tuple(shape))
    return out


def _dtype_of(entry: Any) -> str:
    text = repr(entry.get("dtype") if isinstance(entry, dict) else entry)
    return text if len(text) < 40 else text[:39] + "…"


class Reader:
    """Reads the tensors of a checked file one at a time (safetensors maps the file; nothing is unpickled)."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = path
        try:
            self._f = safe_open(str(path), framework="pt")
        except Exception as e:  # safetensors' own error types for a file that changed since its header was read
            raise _bad(path, f"one that fails to open ({str(e).splitlines()[0][:200]})") from None

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.__exit__(None, None, None)  # unmaps the file

    def get(self, name: str):
        """One tensor (torch)."""
        try:
            return self._f.get_tensor(name)
        except Exception as e:
            raise _bad(self.path, f"tensor {name!r} that fails to load ({str(e).splitlines()[0][:200]})") from None
