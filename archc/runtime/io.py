"""Read model inputs from .npy/.npz/.json/.csv and write results atomically (no torch)."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from archc import strict_json
from archc.util import load_arrays, write_bytes_atomic
from archc.data.columns import number
from archc.errors import InputError
from archc.runtime.session import Model, format_shape
import archc.metadata as keys

INPUT_FORMATS = (".npy", ".npz", ".json", ".csv")
OUTPUT_FORMATS = (".npy", ".npz", ".json", ".csv")


def _err(path: Path, message: str, hint: str = "") -> InputError:
    """An InputError that names the file."""
    return InputError(message, hint=hint, file=str(path))


def read_inputs(path: str | os.PathLike, model: Model) -> dict[str, np.ndarray]:
    """Load feeds for `model` from a file; names, shapes and dtypes are checked later by model.check."""
    return read_input_rows(path, model)[0]


def read_input_rows(path: str | os.PathLike, model: Model) -> tuple[dict[str, np.ndarray], list[int] | None]:
    """read_inputs' feeds and each example's row as the file's messages number it (a CSV's row, counting a header
    as row 1); None where the examples are numbered by position from 0 (.npy, .npz, .json)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in INPUT_FORMATS:
        raise _err(p, f"unsupported input file type: expected one of {', '.join(INPUT_FORMATS)}, "
                      f"received {ext or 'no extension'!r}")
    if not p.is_file():
        raise _err(p, "input file not found" if not p.exists() else "expected a file, received a directory")
    names = list(model.inputs)
    try:
        if ext == ".npy":
            _need_single(p, names, "a .npy file holds one array", "use .npz with one array per input name")
            return {names[0]: load_arrays(p)}, None
        if ext == ".npz":
            with load_arrays(p) as z:
                return {k: z[k] for k in z.files}, None
        if ext == ".json":
            return _read_json(p, model), None
        return _read_csv(p, model)
    except InputError:
        raise
    except (OSError, ValueError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise _err(p, f"could not read the file as {ext}: {exc}") from None


def _need_single(p: Path, names: list[str], what: str, hint: str) -> None:
    """Formats holding one array only fit single-input models."""
    if len(names) != 1:
        raise _err(p, f"{what}, but the model has {len(names)} inputs ({', '.join(names)})", hint=hint)


def _read_json(p: Path, model: Model) -> dict[str, Any]:
    """A nested list (single input), {name: nested list}, or [{name: ...}, ...] per example."""
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"),  # a BOM is accepted, as by every reader
                          object_pairs_hook=strict_json.distinct_keys)
    except strict_json.DuplicateKey as exc:
        raise _err(p, str(exc)) from None
    except json.JSONDecodeError as exc:
        raise _err(p, f"expected valid JSON, received a syntax error at line {exc.lineno}, "
                      f"column {exc.colno}: {exc.msg}") from None
    except RecursionError:  # json's parser recurses once per nesting level
        raise _err(p, "expected JSON of reasonable nesting depth, received one nested too deeply") from None
    if isinstance(data, dict):
        return dict(data)
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        union: dict[str, None] = {}  # the keys in first-seen order (a dict: linear in the keys)
        for rec in data:
            union.update(dict.fromkeys(rec))
        keys = list(union)
        for i, rec in enumerate(data):
            absent = [k for k in keys if k not in rec]
            if absent:
                raise _err(p, f"record {i}: expected keys {', '.join(keys)}, missing {', '.join(absent)}")
        out: dict[str, Any] = {}
        for k in keys:
            try:
                out[k] = np.stack([np.asarray(rec[k]) for rec in data])
            except ValueError:
                shapes = sorted({format_shape(np.shape(rec[k])) for rec in data if _regular(rec[k])})
                raise _err(p, f"input {k!r}: expected every record to have the same shape, "
                              f"received shapes {', '.join(shapes) or 'ragged lists'}") from None
        return out
    names = list(model.inputs)
    _need_single(p, names, "a JSON list holds one input",
                 'use an object {"input_name": [...]} or a list of per-example objects')
    return {names[0]: data}


def _regular(value: Any) -> bool:
    """Whether a nested list converts to a regular array."""
    try:
        np.asarray(value)
        return True
    except ValueError:
        return False


_INT = re.compile(r"[+-]?[0-9]{1,19}")  # ASCII digits ('²'.isdigit() is True), at most int64's 19 digits
INT64 = np.iinfo(np.int64)


def _number(text: str) -> int | float | None:
    """Parse a CSV cell as an int64, else a float (archc.data.columns.number's grammar); None when it is neither."""
    s = text.strip()
    if _INT.fullmatch(s) and INT64.min <= int(s) <= INT64.max:
        return int(s)
    return number(s)


def _read_csv(p: Path, model: Model) -> tuple[dict[str, np.ndarray], list[int]]:
    """One row per example, reshaped to the input's per-example shape; header row optional. With each example's
    row number (from 1, a header included, blank rows skipped), as the messages name rows."""
    names = list(model.inputs)
    _need_single(p, names, "a CSV file holds one input", "use .npz or a JSON object for several inputs")
    sig = model.inputs[names[0]]
    from archc.data.tabular import recognise_delimiter

    with p.open(newline="", encoding="utf-8-sig") as f:  # a BOM (Excel) is accepted, as in training
        text = f.read()
    delimiter = recognise_delimiter(text)  # as training reads a csv: file: a tab, ';' or '|' without a comma
    rows = [(i, r) for i, r in enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), start=1)
            if any(c.strip() for c in r)]
    # A first row where no cell is a number is a header (column names), not data; so is one naming every feature
    # column the model records (pandas' default names are numbers: '0', '1').
    header: list[str] | None = None
    features = _features(model)
    if rows and (all(_number(c) is None for c in rows[0][1])
                 or (features is not None and set(features) <= {c.strip() for c in rows[0][1]})):
        header = rows.pop(0)[1]
    if not rows:
        raise _err(p, "expected at least one data row, received none")
    reordered = False
    if header is not None:
        kept = rows
        rows = _by_name(p, header, rows, features)
        if rows is not kept:  # cells now in the model's feature order: name them, not the file's position
            reordered, header = True, list(features or [])
    width = len(rows[0][1])
    kind = np.dtype(sig.dtype).kind if sig.dtype in np.sctypeDict else ""
    biggest = float(np.finfo(sig.dtype).max) if kind == "f" else math.inf
    values: list[list[int | float]] = []
    for line, row in rows:
        if len(row) != width:
            raise _err(p, f"row {line}: expected {width} values (as in row {rows[0][0]}), received {len(row)}")
        parsed = []
        for col, cell in enumerate(row, start=1):
            v = _number(cell)
            whole = kind in "iu" and v is not None and not isinstance(v, int)  # an integer input: ids, counts
            if v is None or abs(v) > biggest or whole:
                label = f"column {header[col - 1]!r}" if reordered else f"column {col}" + (
                    f" ({header[col - 1].strip()!r})" if header and col <= len(header) else "")
                want = "a number" if v is None else f"a number within {sig.dtype}'s range (magnitude at most " \
                                                       f"{biggest:.4g})"
                if whole:
                    want = f"a whole number within int64's range, without a fraction or exponent (the input " \
                           f"{sig.name!r} is {sig.dtype})"
                raise _err(p, f"row {line}, {label}: expected {want}, received {cell.strip()!r}")
            parsed.append(v)
        values.append(parsed)
    ints = all(isinstance(v, int) for r in values for v in r)
    arr = np.asarray(values, dtype=np.int64 if ints else np.float64)
    return {sig.name: arr.reshape((len(values),) + _example_shape(p, sig, width))}, [line for line, _ in rows]


def _features(model: Model) -> list[str] | None:
    """The feature columns a model trained on a csv: source records (archc.features), in its input's order."""
    try:
        names = json.loads((getattr(model, "metadata", None) or {}).get(keys.FEATURES) or "null")
    except ValueError:
        return None
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) and names else None


def _by_name(p: Path, header: list[str], rows: list[tuple[int, list[str]]],
             features: list[str] | None) -> list[tuple[int, list[str]]]:
    """A CSV's rows with their cells in the order of the model's recorded feature columns, matched by header name
    (any order; other columns, such as the target, ignored); as they are for a model that records none."""
    names = [h.strip() for h in header]
    if features is None or names == features:
        return rows
    at: dict[str, int] = {}
    for i, n in enumerate(names):
        at.setdefault(n, i)
    absent = [f for f in features if f not in at]
    if absent:
        shown = ", ".join(absent[:20]) + (f", ... ({len(absent)} in all)" if len(absent) > 20 else "")
        listed = ", ".join(features[:20]) + (", ..." if len(features) > 20 else "")
        raise _err(p, f"column {absent[0]!r}: expected the model's feature columns in the header ({listed}), "
                      f"missing {shown}",
                   hint="columns are matched by name, in any order; a file without a header is read by position")
    order = [at[f] for f in features]
    out = []
    for line, row in rows:
        if len(row) != len(header):
            raise _err(p, f"row {line}: expected {len(header)} values (as in the header), received {len(row)}")
        out.append((line, [row[i] for i in order]))
    return out


def _example_shape(p: Path, sig, width: int) -> tuple[int, ...]:
    """The per-example shape for `width` flat values; one unknown dim is inferred."""
    dims = list(sig.shape[1:])
    known = math.prod(d for d in dims if isinstance(d, int))
    unknown = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    shape_text = format_shape(sig.shape)
    if not unknown and known == width:
        return tuple(dims)
    if len(unknown) == 1 and known and width % known == 0:
        dims[unknown[0]] = width // known
        return tuple(dims)
    if not dims and width == 1:
        return ()
    need = f"{known} values per row" if not unknown else f"a multiple of {known} values per row"
    if len(unknown) > 1:
        need = "a shape with at most one non-fixed axis per example"
    raise _err(p, f"input {sig.name!r}: expected {need} for shape {shape_text}, received {width}")


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse an unsupported extension or a missing directory before anything runs."""
    p = Path(path)
    if p.is_dir():
        raise _err(p, "expected a file to write, received a directory")
    ext = p.suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise _err(p, f"unsupported output file type: expected one of {', '.join(OUTPUT_FORMATS)}, "
                      f"received {ext or 'no extension'!r}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise _err(p, f"output directory not found: expected an existing directory, received {str(parent)!r}")
    return p


def write_outputs(path: str | os.PathLike, result: dict[str, np.ndarray], records: list[dict],
                  main: str | None = None, keys: dict[str, list] | None = None) -> None:
    """Write raw outputs (.npy: `main`, default the first; .npz: all, with the join `keys`, e.g. each example's
    row or file, beside them: named input_<key> where an output has the key's name) or per-example records
    (.json/.csv; the keys are their leading fields), atomically."""
    p = check_output_path(path)
    ext = p.suffix.lower()
    buf = io.BytesIO()
    if ext == ".npy":
        if not result:
            raise _err(p, "expected at least one output to write, received none")
        np.save(buf, np.asarray(result[main] if main in result else next(iter(result.values()))),
                allow_pickle=False)
    elif ext == ".npz":
        arrays = {k: np.asarray(v) for k, v in result.items()}
        for k, v in (keys or {}).items():
            arrays["input_" + k if k in result else k] = np.asarray(v)
        with zipfile.ZipFile(buf, "w") as zf:  # np.savez's own form, written here: it takes no key named 'file'
            for k, v in arrays.items():
                with zf.open(f"{k}.npy", "w") as f:
                    np.lib.format.write_array(f, v, allow_pickle=False)
    elif ext == ".json":
        buf.write(strict_json.dumps(records, indent=2).encode("utf-8") + b"\n")
    else:
        buf.write(_csv_text(records).encode("utf-8"))
    _atomic_write(p, buf.getvalue())


def _atomic_write(p: Path, data: bytes) -> None:
    """Write to a temp file beside the target, then os.replace: readers never see half a file."""
    try:
        write_bytes_atomic(p, data)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).removeprefix("cannot write: ")  # write_bytes_atomic's own prefix
        raise _err(p, f"could not write the output file: {reason}") from None


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """List values become columns name_0, name_1, …; dicts become name_key."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}_{k}", v, out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _flatten(f"{prefix}_{i}", v, out)
    else:
        out[prefix] = value.item() if isinstance(value, np.generic) else value


def _csv_text(records: list[dict]) -> str:
    """Records as CSV rows; the header is the ordered union of flattened keys."""
    rows = []
    for rec in records:
        flat: dict[str, Any] = {}
        for k, v in rec.items():
            _flatten(str(k), v, flat)
        rows.append(flat)
    header: list[str] = []
    seen: set[str] = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                header.append(k)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if r.get(k) is None else r[k] for k in header])
    return out.getvalue()
