"""`archc infer` on a CSV for a model with a tabular input: columns matched by header name (any order, extra columns
ignored), the cells checked by the reference `Table.encode` (so what a graph cannot refuse is refused here, with
the row and column), fed one input per column (or the encoded row, for a model that still reads it), and scored
against the target column when the file has it. numpy + ONNX Runtime only (no torch)."""
from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from archc.data.columns import Table, is_missing, number
from archc.errors import InputError
from archc.labels import CLASSES
from archc.strict_json import DuplicateKey, distinct_keys
from archc.tasks.base import Labelled, for_model
import archc.metadata as keys

if TYPE_CHECKING:  # the CSV reader: imported where a table is read, not by every `archc infer`
    from archc.data.tabular import RawTable

ENCODED_KEY = keys.ENCODED_INPUT   # a model that takes a row (archc.export.tabular) records what its core reads


def table_of(model: Any) -> Table | None:
    """The fitted table a model records (archc.columns), None without one."""
    text = model.metadata.get(keys.COLUMNS)
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
    value = None if is_missing(cell) else number(cell)
    return math.nan if value is None else value


def csv_input(model: Any, text: str, target: str | None = None) -> Labelled | None:
    """`--input FILE.csv` (or JSON records: FILE.json, a list of objects, or JSON lines FILE.jsonl) of a model with
    a fitted table: every row of the file by column name (None for another model or input: read as before; a csv:
    source is a split, see source_split)."""
    table = table_of(model)
    suffix = Path(text).suffix.lower()
    if table is None or suffix not in (".csv", ".tsv", *JSON_ROWS) or not Path(text).is_file():
        return None
    if suffix in JSON_ROWS:
        raw = json_rows(Path(text))
        if raw is None or (set(raw.columns) <= set(model.inputs) and not set(raw.columns) & set(table.names())):
            return None  # not records, or records of the model's inputs (an encoded row): read by input name
        return labelled_rows(model, table, raw, text, target)
    from archc.data.tabular import read_table

    return labelled_rows(model, table, read_table(Path(text), text), text, target)


JSON_ROWS = (".json", ".jsonl", ".ndjson")  # a list of objects, or one object per line (JSON lines)


def json_rows(path: Path) -> RawTable | None:
    """JSON records (or an object of columns, {name: [value per row]}) as a CSV's rows: each object's keys are
    column names (keys in any order; an absent key or null is a missing cell), numbers and true/false written as a
    CSV would hold them; rows are numbered from 1 (JSON lines: the line). None for a .json file that is neither
    (read by input name, as before)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=distinct_keys)
            if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
                data = _columns_as_records(data, path)  # {column: [one value per row]}: the same rows
            if not (isinstance(data, list) and data and all(isinstance(r, dict) for r in data)):
                return None
            records = list(enumerate(data, start=1))
        else:
            records = []
            for i, line in enumerate(text.splitlines(), start=1):
                try:
                    records.extend([(i, json.loads(line, object_pairs_hook=distinct_keys))] if line.strip() else [])
                except DuplicateKey as e:
                    raise InputError(f"line {i}: {e}", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"expected a readable UTF-8 JSON file, received one that fails to read ({e})",
                         file=str(path)) from None
    except DuplicateKey as e:
        raise InputError(str(e), file=str(path)) from None
    except ValueError as e:  # a JSONDecodeError, or an integer of more digits than Python converts
        if not isinstance(e, json.JSONDecodeError):
            raise InputError(f"expected JSON values archc can read, received one that fails ({e})",
                             file=str(path)) from None
        raise InputError(f"expected valid JSON, received a syntax error at line {e.lineno}, column {e.colno}: "
                         f"{e.msg}", file=str(path)) from None
    except RecursionError:
        raise InputError("expected JSON of reasonable nesting depth, received one nested too deeply",
                         file=str(path)) from None
    from archc.data.tabular import RawTable

    columns: dict[str, None] = {}  # the union of keys in first-seen order (a dict: linear in the keys)
    for line, rec in records:
        if not isinstance(rec, dict):
            raise InputError(f"row {line}: expected an object of column names to values, received "
                             f"{type(rec).__name__}", file=str(path))
        columns.update(dict.fromkeys(rec))
    cells: dict[str, list[str]] = {c: [] for c in columns}
    for line, rec in records:
        for c in columns:
            cells[c].append(_cell_text(rec.get(c), line, c, path))
    return RawTable(list(columns), cells, [line for line, _ in records], "json")


def _columns_as_records(data: dict[str, list], path: Path) -> list[dict[str, Any]]:
    """A JSON object of columns, {name: [value per row]}, as the list of records it stands for; columns of
    different lengths are an InputError naming them."""
    lengths = {k: len(v) for k, v in data.items()}
    first = next(iter(lengths))
    other = next((k for k, n in lengths.items() if n != lengths[first]), None)
    if other is not None:
        raise InputError(f"column {other!r}: expected {lengths[first]} values (one per row, as column {first!r} "
                         f"has), received {lengths[other]}", file=str(path))
    return [{k: v[i] for k, v in data.items()} for i in range(lengths[first])]


def _cell_text(value: Any, line: int, column: str, path: Path) -> str:
    """A JSON value as a CSV cell's text: null '' (missing), true/false, numbers as written, text as it is; a list
    of one value is that value (a column input's example is [value])."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    raise InputError(f"row {line}, column {column!r}: expected a number, text, true/false or null, received a "
                     f"{'list' if isinstance(value, list) else 'object'}", file=str(path))


def source_split(model: Any, source: str, split: str, target: str | None = None) -> Labelled | None:
    """`--input csv:FILE` (or parquet:FILE|DIR) of a model with a fitted table: the rows of `split` as training
    cut them (the spec's [data] fractions and seed, stratified by the target), by column name; None for another model
    or source."""
    from archc.data.arrays import split_rows
    from archc.data.base import Splits
    from archc.data.parquet import read_rows
    from archc.data.sources import make_options, parse
    from archc.data.tabular import RawTable, read_table, target_column, target_values
    from archc.tasks.base import ALL, data_settings

    table = table_of(model)
    if table is None or not source.startswith(("csv:", "parquet:")) or Path(source).exists():
        return None
    cls, arg, query = parse(source)
    options = make_options(cls, source, query, {"target": target} if target else {}, {})
    settings = data_settings(model, split, target)  # `all`: nothing held out, every row in the train part
    if cls.scheme == "parquet":  # only the model's columns and the target are read
        columns, read = read_rows(Path(arg), source)
        name = target_column(columns, options.target or settings["target"] or table.target,  # type: ignore
                             source)
        raw = read(list(dict.fromkeys([c for c in table.names() if c in columns] + [name])))
    else:
        raw = read_table(Path(arg), source, options.dialect(source))  # type: ignore[attr-defined]
        name = target_column(raw.columns, options.target or settings["target"] or table.target,  # type: ignore
                             source)
    y, _, task = target_values(raw.cells[name], name, raw.lines, for_model(model).data_task, source)
    parts = split_rows(len(raw), y, task, Splits(settings["val_fraction"], settings["test_fraction"],
                                                 settings["seed"]))
    rows = parts[0 if split == ALL else ("train", "val", "test").index(split)].tolist()
    cut = RawTable(raw.columns, {c: [v[i] for i in rows] for c, v in raw.cells.items()},
                   [raw.lines[i] for i in rows])
    return split_rows_of(model, table, cut, source, split, name)


def split_rows_of(model: Any, table: Table, cut: RawTable, source: str, split: str, target: str) -> Labelled:
    """The rows of one split of `source` (`cut`, read by source_split or kept by `archc train` as it read them)
    as the model's feeds, scored against the column `target`."""
    from archc.tasks.base import ALL

    what = "every row" if split == ALL else f"{split} split"
    return labelled_rows(model, table, cut, source, target, f"{source}, {what}, {len(cut)} rows")


def labelled_rows(model: Any, table: Table, raw: RawTable, name: str, target: str | None = None,
                  what: str | None = None) -> Labelled:
    """A CSV's rows as the model's feeds (by column name), checked by Table.encode; labels from the target column
    (`target`, else the model's recorded one) when the file has it: y is empty otherwise. Rows whose target cell is
    missing are not scored (label -1, or NaN for values)."""
    _require(table, raw.columns, name, "keys of the file's records" if raw.layout == "json" else "file's header")
    encoded = table.encode(raw.cells, where=name, lines=raw.lines)  # refuses what the graph cannot: row, column
    inputs = feeds(table, raw.cells) if takes_a_row(model) else {table.input: encoded}
    if target is not None and target not in raw.columns:  # named by --target: not silently left unscored
        close = difflib.get_close_matches(target, raw.columns, n=1)
        raise InputError(f"--target {target!r}: expected a column of the file to score against, received columns "
                         f"{_names(raw.columns)}", file=name,
                         hint=f"did you mean {close[0]!r}?" if close else "leave --target out to predict only")
    target = target or table.target
    what = what or f"{name}, {len(raw)} rows"
    if target is None or target not in raw.columns:
        return Labelled(inputs, np.empty(0), what + (f" (no {target!r} column to score)" if target else ""),
                        rows=list(raw.lines))
    y = _labels(model, raw.cells[target], raw.lines, target, name)
    return Labelled(inputs, y, f"{what}, scored against column {target!r}", rows=list(raw.lines))


def _require(table: Table, header: list[str], name: str, place: str = "file's header") -> None:
    """Every column the model reads is in the header: else a located error naming the first absent one."""
    present = set(header)  # a set: linear in the header's width
    absent = [c for c in table.names() if c not in present]
    if not absent:
        return
    close = difflib.get_close_matches(absent[0], header, n=1)
    more = f" (and {len(absent) - 1} more: {_names(absent[1:])})" if len(absent) > 1 else ""
    raise InputError(f"column {absent[0]!r}{more}: expected it in the {place} (the model reads columns "
                     f"{_names(table.names())}), received columns {_names(header)}", file=name,
                     hint=f"did you mean {close[0]!r}?" if close else "columns are matched by name, in any order")


def _names(names: Sequence[str], limit: int = 20) -> str:
    """'a, b, c' for messages, cut after `limit` names (a header may have 100,000)."""
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _labels(model: Any, cells: list[str], lines: list[int], target: str, name: str) -> np.ndarray:
    """The target cells as the model's task scores them: class positions among its labels (-1: missing), or
    float values (NaN: missing)."""
    present = [not is_missing(c) for c in cells]
    if for_model(model).data_task != CLASSES:
        out = np.full(len(cells), np.nan)
        for i, (c, ok) in enumerate(zip(cells, present)):
            value = number(c) if ok else math.nan
            if value is None:
                raise InputError(f"row {lines[i]}, column {target!r}: expected a number (the model's target "
                                 f"values), received {c!r}", file=name)
            out[i] = value
        return out
    from archc.data.classes import match, show

    from archc.data.tabular import class_name

    labels = [str(label) for label in (model.task or {}).get("labels") or []]
    given = [c for c, ok in zip(cells, present) if ok]
    parsed = [number(c) for c in given]
    name_of = {c: c for c in given}  # a class's name as training names it: numbers canonical ('1.0' is '1')
    if parsed and all(v is not None and math.isfinite(v) for v in parsed):
        name_of = {c: class_name(v) for c, v in zip(given, parsed)}  # type: ignore[arg-type]
    values = sorted(set(name_of.values()))
    found = match(values, labels) if labels else None
    if found is None or found.unknown:
        seen = show(found.unknown) if found is not None else show(values)
        raise InputError(f"column {target!r}: expected the classes the model was trained on ({show(labels)}), "
                         f"received {seen}, which the model never saw", file=name,
                         hint="score it on data of the model's classes only, or drop the target column")
    position = dict(zip(values, found.positions.tolist()))
    return np.array([position[name_of[c]] if ok else -1 for c, ok in zip(cells, present)], dtype=np.int64)


def scored(outputs: dict[str, np.ndarray], y: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The outputs and values of the rows that have a target value (NaN: a missing target cell), for the task's
    score; other labels as they are (a class label of -1 is not scored by the classification score itself)."""
    if y.ndim != 1 or y.dtype.kind != "f" or not np.isnan(y).any():
        return outputs, y
    keep = ~np.isnan(y)
    return {k: np.asarray(v)[keep] for k, v in outputs.items()}, y[keep]
