"""`archc columns FILE.csv`: each column's type, missing cells and categories as read from a CSV, and the
`[inputs.NAME.columns]` TOML table a spec declares them with (numpy-free; never imports torch).

The rules, per column (the target excluded), over its present cells (not missing, archc/data/columns.py):
numeric when every one is a number (an integer column of a few values is reported numeric, with a comment that it
could be categorical); boolean when every one is a boolean token and there are two values; categorical otherwise,
its categories listed when there are at most `max_categories` (by frequency, as `fit` orders learned ones), else
learned from the training split (`max_categories` = the file's count, `unknown = "ignore"`). Left out, as a
comment: a text column with a different value on every row or on most (an identifier, free text: more than half the
values distinct), an integer column that reads as row ids (over 90% distinct, running nearly unbroken or under an
id-like name), a column of ISO-like dates (2021-03-04, 2021-03-04T10:20), and a column of numbers written with a
decimal comma ('3,45', in a ';' file), with the hint to read the file with `?decimal=,`. Columns with missing cells
get a missing rule: the median for numbers, the most frequent value otherwise.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from archc.data.columns import (FALSE_TOKENS, TRUE_TOKENS, Column, decimal_comma, is_missing, number,
                                number_problem)
from archc.data.tabular import MAX_CLASSES, RawTable, is_number
from archc.labels import CLASSES, TARGETS

MAX_CATEGORIES = 20     # default: a text column of at most this many values lists its categories
FEW_INTEGERS = 10       # an integer column of at most this many values could be categorical (comment)
NEAR_UNIQUE = 0.9       # integers this share distinct, in a near-unbroken run or under an id-like name: row ids
MIN_RUN = 20            # ... a run that long at least (1, 2, ..., 6 in a small table may be a count)
MOSTLY_UNIQUE = 0.5     # text this share distinct: most values are seen once, nothing a category can learn from
# An ISO 8601-like date or date-time: 2021-03-04, 2021/03/04, 2021-03-04T10:20(:30(.5))(Z|+01:00)
_DATE = re.compile(r"[0-9]{4}([-/])[0-9]{1,2}\1[0-9]{1,2}([ T][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
                   r"(Z|[+-][0-9]{2}:?[0-9]{2})?)?")
_ID_NAME = re.compile(r"(?i)(.*[_ .-])?(id|uuid|key|index|idx|row|rownum)|unnamed: ?0")
_CAMEL_ID = re.compile(r".*[a-z](Id|ID)")  # userId, orderID
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Surveyed:
    """One column as read: the declaration to suggest (None: left out), and what the comment says."""

    name: str
    column: Column | None
    missing: int
    distinct: int
    note: str
    decimal_comma: str = ""  # a cell of a column of numbers written with a decimal comma ('3,45'), left out
    refused: str = ""        # a numeric column's first cell that training refuses ('inf', '1e39'), and why


def survey_column(name: str, cells: list[str], max_categories: int = MAX_CATEGORIES) -> Surveyed:
    """The suggested declaration of one column from all its cells."""
    present = [c.strip() for c in cells if not is_missing(c)]
    missing = len(cells) - len(present)
    counts = Counter(present)
    distinct = len(counts)
    counted = f"{distinct} values" + (f", {missing} missing" if missing else "")
    if not present:
        return Surveyed(name, None, missing, 0, "every cell is missing: left out")
    if all(is_number(c) for c in present):
        rule = "median" if missing else "error"
        note = counted
        values = sorted(counts, key=float)
        if all(float(v).is_integer() for v in values) and 2 < distinct <= min(FEW_INTEGERS, max_categories):
            cats = ", ".join(json.dumps(v) for v in values)
            note += f"; integers: could be {{ type = \"categorical\", categories = [{cats}] }}"
        if _row_ids(name, values, len(present)):
            return Surveyed(name, None, missing, distinct, f"{counted}: integers nearly one per row (an identifier?): "
                                                           f"left out")
        refused = next((f"{c!r}, not {problem}" for c in counts if (problem := number_problem(number(c) or 0.0))),
                       "")
        if refused:
            note += f"; {refused}: training refuses it (clean those cells, or empty them for the missing rule)"
        return Surveyed(name, Column(name, "numeric", missing=rule), missing, distinct, note, refused=refused)
    if all(decimal_comma(c) or is_number(c) for c in present):
        example = next(c for c in present if decimal_comma(c))
        return Surveyed(name, None, missing, distinct, f"{counted}: numbers with a decimal comma such as "
                        f"{example!r}: left out (read them as numbers with ?decimal=,)", decimal_comma=example)
    if all(_DATE.fullmatch(c) for c in present):
        return Surveyed(name, None, missing, distinct, f"{counted}: dates such as {present[0]!r}: left out (a "
                        f"category per date does not generalize; derive numbers such as the year as columns)")
    rule = "most_frequent" if missing else "error"
    lowered = {c.lower() for c in present}
    if lowered <= TRUE_TOKENS | FALSE_TOKENS and len(lowered) == 2:
        return Surveyed(name, Column(name, "boolean", missing=rule), missing, distinct, counted)
    by_freq = sorted(counts, key=lambda v: (-counts[v], v))
    if distinct <= max_categories:
        return Surveyed(name, Column(name, "categorical", missing=rule, categories=tuple(by_freq)), missing,
                        distinct, counted)
    if distinct == len(present):
        return Surveyed(name, None, missing, distinct, f"{distinct} values, one per row (an identifier?): left out")
    if distinct > MOSTLY_UNIQUE * len(present):
        return Surveyed(name, None, missing, distinct, f"{counted} over {len(present)} rows, most seen once (an "
                                                       f"identifier or free text?): left out")
    col = Column(name, "categorical", missing=rule, max_categories=distinct, unknown="ignore")
    return Surveyed(name, col, missing, distinct, f"{counted}: more than {max_categories}, learned from the "
                                                  f"training split")


def _row_ids(name: str, values: list[str], rows: int) -> bool:
    """Whether sorted distinct numbers look like row identifiers: integers on nearly every row that run nearly
    unbroken (1, 2, 3, ...) or sit under an id-like name (id, user_id, Unnamed: 0). Measurements may be
    near-unique too, so neither share alone decides it."""
    if len(values) < 2 or len(values) <= NEAR_UNIQUE * rows or not all(float(v).is_integer() for v in values):
        return False
    span = float(values[-1]) - float(values[0]) + 1
    run = len(values) >= MIN_RUN and span <= len(values) / NEAR_UNIQUE
    return run or any(p.fullmatch(name.strip()) for p in (_ID_NAME, _CAMEL_ID))


def survey(raw: RawTable, target: str, max_categories: int = MAX_CATEGORIES) -> list[Surveyed]:
    """Every column but the target, in file order."""
    return [survey_column(c, raw.cells[c], max_categories) for c in raw.columns if c != target]


def target_summary(cells: list[str]) -> str:
    """What training makes of the target column: the label form (archc.labels: classes, with their names, or
    continuous targets), as the csv: source decides it."""
    present = [c.strip() for c in cells if not is_missing(c)]
    missing = len(cells) - len(present)
    tail = f"; {missing} missing cells: rows training refuses" if missing else ""
    distinct = sorted(set(present))
    numeric = all(is_number(c) for c in present)
    if numeric and not (all(float(c).is_integer() for c in present) and len(distinct) <= MAX_CLASSES):
        return f"{TARGETS}{tail}"
    shown = ", ".join(distinct[:8]) + (", ..." if len(distinct) > 8 else "")
    return f"{CLASSES}, {len(distinct)} classes: {shown}{tail}"


def key(name: str) -> str:
    """A TOML key: bare when it can be, else quoted."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def entry(c: Column) -> str:
    """The column's TOML value: the short form (its type) when nothing else is declared."""
    fields: list[tuple[str, object]] = [("type", c.type)]
    if c.categories is not None:
        fields.append(("categories", list(c.categories)))
    if c.max_categories is not None:
        fields.append(("max_categories", c.max_categories))
    if c.missing != "error":
        fields.append(("missing", c.missing))
    if c.unknown != "error":
        fields.append(("unknown", c.unknown))
    if len(fields) == 1:
        return json.dumps(c.type)
    return "{ " + ", ".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in fields) + " }"


def toml_block(path: Path, raw: RawTable, target: str, input_name: str, surveyed: list[Surveyed],
               source: str | None = None) -> str:
    """The `[inputs.NAME]` and `[inputs.NAME.columns]` tables to paste into a spec, with counts as comments;
    `source`: the csv: source with its reading options (default: csv:PATH)."""
    lines = [f"# archc columns {path}: {len(raw)} rows, {len(raw.columns)} columns",
             f"# target {target!r}: {target_summary(raw.cells[target])}",
             *(["# read as scikit-learn's layout (a first line of counts and class names): features column_1, "
                "column_2, ..., the target 'target'"] if raw.layout == "sklearn" else []),
             "# [data]",
             f"# source = {json.dumps(source or f'csv:{path}', ensure_ascii=False)}",
             f"# target = {json.dumps(target, ensure_ascii=False)}",
             f"[inputs.{key(input_name)}]",
             "",
             f"[inputs.{key(input_name)}.columns]"]
    for s in surveyed:
        if s.column is None:
            lines.append(f"# {key(s.name)}: {s.note}")
        else:
            lines.append(f"{key(s.name)} = {entry(s.column)}  # {s.note}")
    return "\n".join(lines) + "\n"
