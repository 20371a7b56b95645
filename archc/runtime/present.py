"""Task-aware presentation of model outputs: per-example records and a fixed-width text table."""
from __future__ import annotations

from typing import Any

import numpy as np

from archc.runtime.session import Model

SCORE_KINDS = ("logits", "probs", "log_probs")
CLASS_TASKS = ("classification", "node_classification", "graph_classification")  # one label per row


def task_kind(model: Model) -> str | None:
    """The task kind from archc metadata; None for foreign models."""
    return str(model.task.get("kind")) if model.task and model.task.get("kind") else None


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (float64, so probabilities sum to 1 closely)."""
    z = np.asarray(x, dtype=np.float64)
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def probabilities(values: np.ndarray, kind: str | None) -> np.ndarray:
    """Class probabilities from an output of the given kind (unknown kinds are treated as logits)."""
    if kind == "probs":
        return np.asarray(values, dtype=np.float64)
    if kind == "log_probs":
        return np.exp(np.asarray(values, dtype=np.float64))
    return softmax(values)


def _class_output(model: Model, outputs: dict[str, np.ndarray]) -> str | None:
    """The output holding class scores: the first with a score kind, else the first output."""
    for name in outputs:
        sig = model.outputs.get(name)
        if sig is not None and sig.kind in SCORE_KINDS:
            return name
    return next(iter(outputs), None)


def _plain(value: np.ndarray) -> Any:
    """A per-example value as a Python scalar (size one) or nested list."""
    arr = np.asarray(value)
    return arr.reshape(()).item() if arr.size == 1 else arr.tolist()


def records(model: Model, outputs: dict[str, np.ndarray], top: int = 0) -> list[dict]:
    """One dict per example: label/probability/index for classification, raw values otherwise."""
    if task_kind(model) in CLASS_TASKS:
        name = _class_output(model, outputs)
        arr = np.asarray(outputs[name]) if name is not None else None
        if arr is not None and arr.ndim in (1, 2) and arr.size:
            sig = model.outputs.get(name)
            probs = probabilities(arr if arr.ndim == 2 else arr[np.newaxis], sig.kind if sig else None)
            labels = (model.task or {}).get("labels") or []

            def label(i: int) -> str:
                return str(labels[i]) if i < len(labels) else str(i)

            out = []
            for row in probs:
                idx = int(np.argmax(row))
                rec: dict[str, Any] = {"label": label(idx), "probability": float(row[idx]), "index": idx}
                if top > 1:
                    order = np.argsort(-row, kind="stable")[:top]
                    rec["top"] = [{"label": label(int(i)), "probability": float(row[i])} for i in order]
                out.append(rec)
            return out
    return value_records(outputs)


def value_records(outputs: dict[str, np.ndarray]) -> list[dict]:
    """Per example {output_name: value}; one record of whole arrays when outputs share no batch axis."""
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    lengths = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if not arrays:
        return []
    if len(lengths) != 1 or None in lengths:
        return [{k: _plain(a) for k, a in arrays.items()}]
    n = lengths.pop()
    return [{k: _plain(a[i]) for k, a in arrays.items()} for i in range(n)]


def _fmt(value: Any, max_items: int = 6) -> str:
    """Compact text for a cell: 4 significant digits, long lists shortened."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        flat = np.asarray(value, dtype=object).ravel().tolist() if value else []
        shown = ", ".join(_fmt(v) for v in flat[:max_items])
        more = f", … (+{len(flat) - max_items})" if len(flat) > max_items else ""
        return f"[{shown}{more}]"
    return str(value)


def table(model: Model, outputs: dict[str, np.ndarray], limit: int = 20) -> str:
    """A fixed-width text table, one row per example, truncated after `limit` rows."""
    recs = records(model, outputs)
    if not recs:
        return "(no examples)"
    if task_kind(model) in CLASS_TASKS and "label" in recs[0]:
        header = ["#", "label", "probability"]
        rows = [[str(i), str(r["label"]), f"{r['probability']:.4f}"] for i, r in enumerate(recs)]
    else:
        keys = list(recs[0])
        header = ["#"] + keys
        rows = [[str(i)] + [_fmt(r.get(k)) for k in keys] for i, r in enumerate(recs)]
    shown = rows if not limit or limit <= 0 else rows[:limit]
    widths = [max(len(c) for c in col) for col in zip(header, *shown)]
    # Numbers right-aligned, text (labels) left-aligned, so columns line up when scanning.
    numeric = [all(_is_number(row[j]) for row in shown) for j in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, numeric)).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in shown]
    if len(rows) > len(shown):
        lines.append(f"… {len(rows) - len(shown)} more rows")
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    """Whether a cell's text is a plain number."""
    try:
        float(text)
        return True
    except ValueError:
        return False
