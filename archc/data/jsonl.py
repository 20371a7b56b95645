"""`jsonl:FILE[?features=FIELD&label=FIELD]`: one JSON object per line, holding an example's features and label."""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from archc.data.arrays import from_arrays, labels_for_task
from archc.data.base import Example, Source, Splits, register
from archc.data.options import SourceOptions, option
from archc.data.columns import FLOAT32_MAX
from archc.data.dataset import Dataset
from archc.strict_json import DuplicateKey, distinct_keys
from archc.util import why_not_a_file
from archc.errors import DataError, describe
from archc.labels import CLASSES, TARGETS


@dataclass(frozen=True)
class JsonlOptions(SourceOptions):
    features: str = option("x", title="FIELD", description="the field holding a number or a nested list of numbers")
    label: str = option("y", title="FIELD", description="the field holding the class name or number, or the target")


@register
class JsonLines(Source):
    """A JSON Lines file: per line an object whose `features` field is a number or a (nested) list of numbers
    of one shape, and whose `label` field is a class (text or integer) or a regression target (float)."""

    scheme = "jsonl"
    argument = "FILE"
    takes_path = True
    tasks = (CLASSES, TARGETS)
    Options = JsonlOptions

    def load(self, arg: Path, splits: Splits, task: str | None, options: JsonlOptions) -> Dataset:
        """Features as float32 [N, *shape]; text or integer labels are classes, floats regression targets."""
        if not arg.is_file():
            raise DataError(f"expected a JSON Lines file, received {str(arg)!r}{why_not_a_file(arg)}",
                            where=self.name)
        rows = _read_objects(arg, self.name)
        xs, ys, first = [], [], None
        for line, obj in rows:
            x = _features(obj, options.features, line, self.name)
            if first is None:
                first = (line, x.shape)
            elif x.shape != first[1]:
                raise DataError(f"line {line}, {options.features!r}: expected shape {list(first[1])} like line "
                                f"{first[0]}, received {list(x.shape)}", where=self.name)
            xs.append(x)
            ys.append(_field(obj, options.label, "label", line, self.name))
        if not xs:
            raise DataError("expected at least one JSON object, received none", where=self.name)
        y = _labels(ys, options.label, rows, self.name)
        y, classes, task = labels_for_task(y, task, None, self.name)
        return from_arrays(self.name, np.stack(xs), y, classes=classes, task=task, splits=splits)

    @classmethod
    def claims(cls, path: Path) -> bool:
        return path.suffix.lower() in (".jsonl", ".ndjson")

    @classmethod
    def example(cls, folder: Path) -> Example:
        lines = [json.dumps({"pixels": [[i % 4, i % 3], [1.5, -i]], "animal": ["cat", "dog", "owl"][i % 3]})
                 for i in range(18)]
        (folder / "pets.jsonl").write_text("\n".join(lines) + "\n\n")
        return Example(f"jsonl:{folder / 'pets.jsonl'}?features=pixels", CLASSES, (2, 2), 18,
                       {"label": "animal"})


def _read_objects(path: Path, name: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"expected a readable UTF-8 file, received one that fails to read ({e})", where=name) from None
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, object_pairs_hook=distinct_keys)
        except json.JSONDecodeError as e:
            raise DataError(f"line {line}: expected a JSON object, received text that does not parse ({e.msg})",
                            where=name) from None
        except ValueError as e:  # a key written twice, or an integer of more digits than Python converts
            raise DataError(f"line {line}: {e}" if isinstance(e, DuplicateKey) else
                            f"line {line}: expected JSON values archc can read, received one that fails ({e})",
                            where=name) from None
        except RecursionError:  # json's parser recurses once per nesting level
            raise DataError(f"line {line}: expected a JSON object of reasonable nesting depth, received one "
                            "nested too deeply", where=name) from None
        if not isinstance(obj, dict):
            raise DataError(f"line {line}: expected a JSON object, received {describe(obj)}", where=name)
        rows.append((line, obj))
    return rows


def _field(obj: dict[str, Any], key: str, option: str, line: int, name: str) -> Any:
    """obj[key], or a DataError naming the fields the line has and the option that names the field."""
    if key not in obj:
        close = difflib.get_close_matches(key, list(obj), n=1)
        raise DataError(f"line {line}: expected a field {key!r}, received fields {sorted(obj)}", where=name,
                        hint=(f"did you mean {close[0]!r}? " if close else "") + f"the option ?{option}=FIELD names it")
    return obj[key]


def _features(obj: dict[str, Any], key: str, line: int, name: str) -> np.ndarray:
    """One example's features as float32 (a number gives shape [1])."""
    value = _field(obj, key, "features", line, name)
    try:
        wide = np.asarray(value, dtype=np.float64)  # float64 first: a float32 overflow is named, not a warning
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float64
        raise DataError(f"line {line}, {key!r}: expected a number or a list of numbers of one shape, received "
                        f"{describe(value)}", where=name) from None
    if not np.isfinite(wide).all():
        raise DataError(f"line {line}, {key!r}: expected finite numbers, received NaN or inf", where=name)
    big = np.abs(wide) > FLOAT32_MAX
    if big.any():
        raise DataError(f"line {line}, {key!r}: expected numbers within float32's range (magnitude at most "
                        f"{FLOAT32_MAX:.4g}), received {wide[big][0]:g}", where=name)
    x = wide.astype(np.float32)
    return x.reshape(1) if x.ndim == 0 else x


def _labels(values: list[Any], key: str, rows: list[tuple[int, dict]], name: str) -> np.ndarray:
    """Labels of one kind: all text (class names) or all numbers (class ids or targets)."""
    for (line, _), v in zip(rows, values):
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise DataError(f"line {line}, {key!r}: expected a class name or a number, received {describe(v)}",
                            where=name)
    texts = [isinstance(v, str) for v in values]
    if any(texts) and not all(texts):
        line = rows[texts.index(not texts[0])][0]
        raise DataError(f"line {line}, {key!r}: expected labels of one kind (text or numbers, as on line "
                        f"{rows[0][0]}), received {describe(values[texts.index(not texts[0])])}", where=name)
    return np.array(values)
