"""A tabular input's declared columns: the spec's `[inputs.NAME] columns` (with the input's defaults) as
archc.data.columns.Column, and every inconsistency as a SpecError located at `inputs.NAME.columns.COL`."""
from __future__ import annotations

from typing import TYPE_CHECKING

from archc.errors import ArchcError, SpecError
from archc.language.model import ColumnDecl, Input, Spec

if TYPE_CHECKING:  # archc.data loads numpy and every source: imported only for a spec that has columns
    from archc.data.columns import Column

DEFAULTS = ("missing", "indicator", "unknown", "scale")  # an input's defaults for its columns
SHAPED_ONLY = ("dtype", "vocab", "batched")  # a tabular input is float32 rows, batched, its width from its columns


def column(name: str, decl: str | ColumnDecl, inp: Input) -> Column:
    """One declared column with the input's defaults filled in where the column leaves them out. A default only
    reaches the columns it fits: `unknown` categorical ones, `scale` numeric and boolean ones, and mean/median
    reach a categorical column as most_frequent (its central value), so one input-wide rule imputes every column."""
    from archc.data.columns import STATS_MISSING, Column

    d = ColumnDecl(type=decl) if isinstance(decl, str) else decl  # type: ignore[arg-type]
    cat = d.type == "categorical"
    missing = d.missing or ("most_frequent" if cat and inp.missing in STATS_MISSING else inp.missing)
    unknown = d.unknown or (inp.unknown if cat else "error")
    scale = d.scale if d.scale is not None else (None if cat else inp.scale)
    categories = tuple(str(c) for c in d.categories) if d.categories is not None else None
    indicator = d.indicator if d.indicator is not None else inp.indicator
    return Column(name=name, type=d.type, missing=missing, fill=d.fill, indicator=indicator, scale=scale,
                  encode=d.encode, dim=d.dim, categories=categories, max_categories=d.max_categories,
                  unknown=unknown)


def columns(inp: Input) -> tuple[Column, ...]:
    """The input's columns in declaration order (the encoded order); () for a shaped input."""
    return tuple(column(name, decl, inp) for name, decl in (inp.columns or {}).items())


def tabular(spec: Spec) -> dict[str, tuple[Column, ...]]:
    """Every tabular input's columns, by input name."""
    return {name: columns(inp) for name, inp in spec.inputs.items() if inp.columns is not None}


def check(spec: Spec) -> list[ArchcError]:
    """Every problem of the inputs' shape-or-columns form and of each declared column, located."""
    errors: list[ArchcError] = []
    for name, inp in spec.inputs.items():
        errors += _form(name, inp)
        for col, decl in (inp.columns or {}).items():
            where = f"inputs.{name}.columns.{col}"
            errors += [SpecError(p, where=where) for p in _name(col)]
            if isinstance(decl, ColumnDecl) and decl.scale is not None and decl.type == "categorical":
                errors.append(SpecError("scale: only for numeric and boolean columns, received it on a "
                                        "categorical column", where=where))
            errors += [SpecError(p, where=where) for p in column(col, decl, inp).problems()]
    errors += _target(spec) + _normalize(spec)
    return errors


def _form(name: str, inp: Input) -> list[ArchcError]:
    """`shape` or `columns`, exactly one; the columns' defaults and the shape's attributes not mixed."""
    where = f"inputs.{name}"
    if inp.columns is None and inp.shape is None:
        return [SpecError("expected `shape = [...]` or, for a tabular input, `columns = {...}`, received neither",
                          where=where)]
    if inp.columns is not None and inp.shape is not None:
        return [SpecError("expected `shape` or `columns`, received both", where=f"{where}.shape",
                          hint="a tabular input's width follows from its columns: remove the shape")]
    given = inp.model_fields_set
    if inp.columns is not None:
        return [SpecError("expected it only with `shape`, received it with `columns` (a tabular input is batched "
                          "float32 rows)", where=f"{where}.{key}") for key in SHAPED_ONLY if key in given]
    return [SpecError("expected it only with `columns` (a default for the columns), received it with `shape`",
                      where=f"{where}.{key}") for key in DEFAULTS if key in given]


def _name(col: str) -> list[str]:
    """A column name as a CSV header cell reads (stripped): non-empty, no surrounding blanks, and not in the
    namespace of the preprocessing values of a model that takes a row (archc_row/...)."""
    from archc.data.columns import ROW_PREFIX

    if not col.strip():
        return ["expected a column name, received an empty one"]
    if col != col.strip():
        return [f"expected a column name without surrounding blanks (as a CSV header cell reads), received {col!r}"]
    if col.startswith(ROW_PREFIX + "/"):
        return [f"expected a column name that does not start with '{ROW_PREFIX}/' (the exported model's "
                f"preprocessing values are named {ROW_PREFIX}/<column>/<step>), received {col!r}"]
    return []


def _target(spec: Spec) -> list[ArchcError]:
    """The data's target is what the model predicts: a feature column of the same name would hand it the answer."""
    target = spec.data.target if spec.data is not None else None
    for name, inp in spec.inputs.items():
        if target is not None and target in (inp.columns or {}):
            return [SpecError(f"expected a target that is not a feature column, received {target!r}, declared in "
                              f"inputs.{name}.columns", where="data.target",
                              hint=f"remove {target!r} from the input's columns, or name another target")]
    return []


def _normalize(spec: Spec) -> list[ArchcError]:
    """[data] normalize standardizes the whole input; a tabular input's columns scale themselves (`scale`), and a
    one-hot or index value must reach the model as it was encoded."""
    names = [name for name, inp in spec.inputs.items() if inp.columns is not None]
    if spec.data is None or not spec.data.normalize or not names:
        return []
    return [SpecError(f"expected no normalize with a tabular input, received normalize = true and input "
                      f"{names[0]!r} declared by columns", where="data.normalize",
                      hint="remove it: numeric columns are standardized by their own `scale` (on by default)")]
