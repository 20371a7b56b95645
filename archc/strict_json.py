"""Strict JSON for every `--json` output and JSON file archc writes: NaN and ±inf become null.

Python's json module writes NaN and Infinity by default, which no strict parser (jq, JavaScript's JSON.parse,
RFC 8259) accepts. A non-finite number means "no value" here (a metric of an empty split, a diverged loss),
so null says it in JSON; allow_nan=False then guards against any path that was missed.
"""
from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with NaN/inf floats replaced by None and array-likes (numpy) turned into lists and numbers."""
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return finite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of `value` (see finite)."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)


class DuplicateKey(ValueError):
    """A JSON object names one key twice (json keeps the last silently); the message names the key (`key`)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"expected distinct keys in a JSON object, received {key!r} twice")
        self.key = key


def distinct_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook: the object, or DuplicateKey naming a key written twice."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k)
        out[k] = v
    return out
