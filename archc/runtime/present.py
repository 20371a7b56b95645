"""Presentation of model outputs: per-example records (as the model's task kind makes them) and a text table."""
from __future__ import annotations

from typing import Any

import numpy as np

from archc.runtime.session import Model
from archc.tasks.base import for_model


def records(model: Model, outputs: dict[str, np.ndarray], top: int = 0) -> list[dict]:
    """One dict per example, as the model's task kind presents it (archc.tasks): e.g. label/probability/predicted_index
    for classification, raw values for regression and models without a known task."""
    return for_model(model, strict=False).records(model, outputs, top)


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


def table(model: Model, outputs: dict[str, np.ndarray], limit: int = 20, extra: dict[str, list] | None = None,
          top: int = 0) -> str:
    """A fixed-width text table, one row per example, truncated after `limit` rows. `extra` columns (a file name,
    the true label: one value per example) come first; `top` > 1 adds the k likeliest classes with their scores."""
    recs = records(model, outputs, top)
    if not recs:
        return "(no examples)"
    task = for_model(model, strict=False)
    columns = task.columns
    own = task.cells(model, outputs)
    if own is not None:  # the task lays its table out itself (embedding: a row per vector)
        header, rows = own
    elif columns and all(key in recs[0] for key, _ in columns):  # the task's own columns, when its records fit
        header = ["#"] + [key for key, _ in columns]
        rows = [[str(i)] + [cell(r[key]) for key, cell in columns] for i, r in enumerate(recs)]
    else:
        keys = [k for k in recs[0] if k != "top"]
        header = ["#"] + keys
        rows = [[str(i)] + [_fmt(r.get(k)) for k in keys] for i, r in enumerate(recs)]
    if own is None and top > 1 and "top" in recs[0]:
        header.append(f"top {top}")
        for row, r in zip(rows, recs):
            row.append(", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"]))
    if own is None and extra and all(len(v) == len(rows) for v in extra.values()):
        header[1:1] = list(extra)
        for i, row in enumerate(rows):
            row[1:1] = [_fmt(v[i]) for v in extra.values()]
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
