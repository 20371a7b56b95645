"""`archc infer` on a CSV for a model with a tabular input: columns matched by header name (any order, extra columns
ignored), the cells checked by the reference `Table.encode` (so what a graph cannot refuse is refused here, with
the row and column), fed one input per column (or the encoded row, for a model that still reads it), and scored
against the target column when the file has it. numpy + ONNX Runtime only (no torch)."""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from archc.data.columns import Table, is_missing
from archc.data.tabular import RawTable
from archc.errors import InputError
from archc.labels import CLASSES
from archc.tasks.base import Labelled, for_model

ENCODED_KEY = "archc.encoded_input"   # a model that takes a row (archc.export.tabular) records what its core reads


def table_of(model: Any) -> Table | None:
    """The fitted table a model records (archc.columns), None without one."""
    text = model.metadata.get("archc.columns")
    if not text:
        return None
    try:
        return Table.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        from archc.errors import ModelError

        raise ModelError(f"metadata 'archc.columns': expected a fitted table, received one that does not read "
                         f"({type(e).__name__}: {e})", where=model.path or "model") from None


def takes_a_row(model: Any) -> bool:
    """Whether the model's inputs are its table's columns (archc.export.tabular), not the encoded row."""
    return ENCODED_KEY in model.metadata


def feeds(table: Table, cells: dict[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """Raw cells by column name -> the inputs of a model that takes a row: numeric float64 [N, 1] (missing: NaN; a
    model exported before its numeric inputs were float64 gets them cast by Model.check),
    the others their text with surrounding blanks stripped, object [N, 1] (ONNX Runtime's strings). Cells the
    reference refuses are not checked here (Table.encode does)."""
    out: dict[str, np.ndarray] = {}
    for f in table.columns:
        column = list(cells[f.name])
        if f.column.type == "numeric":
            out[f.name] = np.array([_float(v) for v in column], dtype=np.float64).reshape(len(column), 1)
        else:
            text = ["" if is_missing(v) and not isinstance(v, str) else str(v).strip() for v in column]
            out[f.name] = np.array(text, dtype=object).reshape(len(column), 1)
    return out


def _float(cell: Any) -> float:
    """A numeric cell's value; NaN when missing (or not a number, which Table.encode refuses before a run)."""
    if is_missing(cell):
        return float("nan")
    try:
        return float(cell)
    except (TypeError, ValueError):
        return float("nan")


def csv_input(model: Any, text: str, target: str | None = None) -> Labelled | None:
    """`--input FILE.csv` of a model with a fitted table: every row of the file by column name (None for another
    model or input: read as before; a csv: source is a split, see source_split)."""
    table = table_of(model)
    if table is None or Path(text).suffix.lower() not in (".csv", ".tsv") or not Path(text).is_file():
        return None
    from archc.data.tabular import read_table

    return labelled_rows(model, table, read_table(Path(text), text), text, target)


def source_split(model: Any, source: str, split: str, target: str | None = None) -> Labelled | None:
    """`--input csv:FILE` of a model with a fitted table: the rows of `split` as training cut them (the spec's
    [data] fractions and seed, stratified by the target), by column name; None for another model or source."""
    from archc.data.arrays import split_rows
    from archc.data.base import REGISTRY, Splits
    from archc.data.sources import make_options, parse
    from archc.data.tabular import read_table, target_column, target_values
    from archc.tasks.base import ALL, data_settings

    table = table_of(model)
    if table is None or not source.startswith("csv:") or Path(source).exists():
        return None
    cls, arg, query = parse(source)
    options = make_options(REGISTRY["csv"], source, query, {"target": target} if target else {}, {})
    settings = data_settings(model, split, target)  # `all`: nothing held out, every row in the train part
    raw = read_table(Path(arg), source, options.dialect(source))  # type: ignore[attr-defined]
    name = target_column(raw.columns, options.target or settings["target"] or table.target,  # type: ignore
                          source)
    y, _, task = target_values(raw.cells[name], name, raw.lines, for_model(model).data_task, source)
    parts = split_rows(len(raw), y, task, Splits(settings["val_fraction"], settings["test_fraction"],
                                                 settings["seed"]))
    rows = parts[0 if split == ALL else ("train", "val", "test").index(split)].tolist()
    cut = RawTable(raw.columns, {c: [v[i] for i in rows] for c, v in raw.cells.items()},
                   [raw.lines[i] for i in rows])
    what = "every row" if split == ALL else f"{split} split"
    return labelled_rows(model, table, cut, source, name, f"{source}, {what}, {len(cut)} rows")


def labelled_rows(model: Any, table: Table, raw: RawTable, name: str, target: str | None = None,
                  what: str | None = None) -> Labelled:
    """A CSV's rows as the model's feeds (by column name), checked by Table.encode; labels from the target column
    (`target`, else the model's recorded one) when the file has it: y is empty otherwise. Rows whose target cell is
    missing are not scored (label -1, or NaN for values)."""
    _require(table, raw.columns, name)
    encoded = table.encode(raw.cells, where=name, lines=raw.lines)  # refuses what the graph cannot: row, column
    inputs = feeds(table, raw.cells) if takes_a_row(model) else {table.input: encoded}
    target = target or table.target
    what = what or f"{name}, {len(raw)} rows"
    if target is None or target not in raw.columns:
        return Labelled(inputs, np.empty(0), what + (f" (no {target!r} column to score)" if target else ""))
    y = _labels(model, raw.cells[target], raw.lines, target, name)
    return Labelled(inputs, y, f"{what}, scored against column {target!r}")


def _require(table: Table, header: list[str], name: str) -> None:
    """Every column the model reads is in the header: else a located error naming the first absent one."""
    absent = [c for c in table.names() if c not in header]
    if not absent:
        return
    close = difflib.get_close_matches(absent[0], header, n=1)
    more = f" (and {len(absent) - 1} more: {', '.join(absent[1:])})" if len(absent) > 1 else ""
    raise InputError(f"column {absent[0]!r}{more}: expected it in the file's header (the model reads columns "
                     f"{', '.join(table.names())}), received columns {', '.join(header)}", file=name,
                     hint=f"did you mean {close[0]!r}?" if close else "columns are matched by name, in any order")


def _labels(model: Any, cells: list[str], lines: list[int], target: str, name: str) -> np.ndarray:
    """The target cells as the model's task scores them: class positions among its labels (-1: missing), or
    float values (NaN: missing)."""
    present = [not is_missing(c) for c in cells]
    if for_model(model).data_task != CLASSES:
        out = np.full(len(cells), np.nan)
        for i, (c, ok) in enumerate(zip(cells, present)):
            if ok:
                try:
                    out[i] = float(c)
                except ValueError:
                    raise InputError(f"row {lines[i]}, column {target!r}: expected a number (the model's target "
                                     f"values), received {c!r}", file=name) from None
        return out
    from archc.data.classes import match, show

    labels = [str(label) for label in (model.task or {}).get("labels") or []]
    values = sorted({c for c, ok in zip(cells, present) if ok})
    found = match(values, labels) if labels else None
    if found is None or found.unknown:
        seen = show(found.unknown) if found is not None else show(values)
        raise InputError(f"column {target!r}: expected the classes the model was trained on ({show(labels)}), "
                         f"received {seen}, which the model never saw", file=name,
                         hint="score it on data of the model's classes only, or drop the target column")
    position = dict(zip(values, found.positions.tolist()))
    return np.array([position[c] if ok else -1 for c, ok in zip(cells, present)], dtype=np.int64)


def scored(outputs: dict[str, np.ndarray], y: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The outputs and values of the rows that have a target value (NaN: a missing target cell), for the task's
    score; other labels as they are (a class label of -1 is not scored by the classification score itself)."""
    if y.ndim != 1 or y.dtype.kind != "f" or not np.isnan(y).any():
        return outputs, y
    keep = ~np.isnan(y)
    return {k: np.asarray(v)[keep] for k, v in outputs.items()}, y[keep]
