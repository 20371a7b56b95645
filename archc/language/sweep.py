"""[sweep]: the search space of `archc sweep`, checked as every other table is (no torch, no optuna).

Each key names a target, a [params] entry or a [train] key, dotted: "params.width", "train.optimizer.lr",
"train.batch_size". Each value is one Range (archc.language.model): { int = [lo, hi] }, { float = [lo, hi] },
{ log_uniform = [lo, hi] } or { choice = [...] }, with `log` and `step` for int and float. A trial's spec is the
spec with its values written into the targets and the [sweep] table left out (`apply`); validate compiles the spec
with each choice and each range end in turn, so a value that would fail a trial fails validate first.
"""
from __future__ import annotations

import copy
import math
import typing
from typing import Any, Callable

from pydantic import BaseModel

from archc.errors import ArchcError, SpecError, describe
from archc.language.errors import close_matches
from archc.language.model import SWEEP_KINDS as KINDS, Train

TABLES = ("params", "train")          # what a target may name, first part of its dotted key


# ---- the ranges ------------------------------------------------------------------------------------------------

def kind_of(r: Any) -> str:
    """The range's kind: 'int', 'float', 'log_uniform' or 'choice' (exactly one is set: `check` says so)."""
    return next(k for k in KINDS if _value(r, k) is not None)


def _value(r: Any, kind: str) -> Any:
    return getattr(r, {"int": "int_", "float": "float_"}.get(kind, kind))


def bounds(r: Any) -> list[Any]:
    """[low, high] of a numeric range, the values of a choice."""
    return list(_value(r, kind_of(r)))


def is_log(r: Any) -> bool:
    return kind_of(r) == "log_uniform" or bool(r.log)


def probes(r: Any) -> list[tuple[str, Any]]:
    """The values validate tries for a range, with where each is written: every choice, and both ends of a range
    (an int range's high end on its step's grid)."""
    kind = kind_of(r)
    values = bounds(r)
    if kind != "choice" and r.step is not None and not is_log(r):
        steps = math.floor((values[1] - values[0]) / r.step + 1e-9)  # 0.3 / 0.1 is 2.9999999999999996: 3 steps
        values = [values[0], values[0] + steps * r.step]
    return [(f"{kind}[{i}]", v) for i, v in enumerate(values)]


def range_errors(r: Any, where: str) -> list[SpecError]:
    """Exactly one kind; low <= high; log ranges above 0; `log` and `step` only where they mean something."""
    kinds = [k for k in KINDS if _value(r, k) is not None]
    if len(kinds) != 1:
        got = "none" if not kinds else " and ".join(kinds)
        return [SpecError(f"expected exactly one of {', '.join(KINDS)}, received {got}", where=where,
                          hint='e.g. { int = [32, 256] }, { log_uniform = [1e-4, 1e-2] }, { choice = [32, 64] }')]
    kind, errors = kinds[0], []
    if kind == "choice":
        seen = [(type(v), v) for v in r.choice]
        if len(set(seen)) != len(seen):
            errors.append(SpecError(f"expected distinct values, received {describe(r.choice)}",
                                    where=f"{where}.choice"))
    else:
        typed = _typed(bounds(r), kind, f"{where}.{kind}")
        if typed:
            return typed
        low, high = bounds(r)
        if low > high:
            errors.append(SpecError(f"expected [low, high] with low <= high, received [{low}, {high}]",
                                    where=f"{where}.{kind}"))
        if is_log(r) and low <= 0:
            errors.append(SpecError(f"expected a low end > 0 for a log range, received {low}",
                                    where=f"{where}.{kind}", hint="log space starts above 0"))
    for key in ("log", "step"):
        if key in r.model_fields_set and kind not in ("int", "float"):
            errors.append(SpecError(f"expected no {key} with {kind}, received {describe(getattr(r, key))}",
                                    where=f"{where}.{key}", hint=f"{key} is for int and float ranges"))
    if r.step is not None and kind in ("int", "float"):
        if r.log:
            errors.append(SpecError(f"expected no step with log = true, received {describe(r.step)}",
                                    where=f"{where}.step", hint="a log range has no grid: drop one"))
        if kind == "int" and not isinstance(r.step, int):
            errors.append(SpecError(f"expected an integer step for an int range, received {describe(r.step)}",
                                    where=f"{where}.step"))
    return errors


def _typed(values: list[Any], kind: str, where: str) -> list[SpecError]:
    """[low, high]: an int range's integers, the others' finite numbers (booleans are neither)."""
    if len(values) != 2:
        return [SpecError(f"expected [low, high], received {describe(values)}", where=where)]
    want, ok = ("an integer", lambda v: isinstance(v, int)) if kind == "int" else \
        ("a finite number", lambda v: isinstance(v, (int, float)) and math.isfinite(v))
    return [SpecError(f"expected {want}, received {describe(v)}", where=f"{where}[{i}]")
            for i, v in enumerate(values) if isinstance(v, bool) or not ok(v)]


# ---- the targets -----------------------------------------------------------------------------------------------

def target_error(target: str, spec: Any, where: str) -> SpecError | None:
    """None when `target` names a [params] entry or a [train] key, else the error with its close matches."""
    table, _, rest = target.partition(".")
    if table not in TABLES or not rest:
        options = [f"params.{p}" for p in spec.params] + [f"train.{k}" for k in _keys(Train)]
        return SpecError(f"unknown target '{target}': expected params.NAME or train.KEY", where=where,
                         hint=close_matches(target, options) or "e.g. \"params.width\", \"train.optimizer.lr\"")
    if table == "params":
        if rest not in spec.params:
            known = list(spec.params)
            return SpecError(f"unknown target '{target}': [params] has no '{rest}'", where=where,
                             hint=close_matches(rest, known) or (f"[params] holds {', '.join(known)}" if known else
                                                               "declare it in [params] (e.g. width = 256) and use "
                                                               "$width in the layers"))
        return None
    model: type[BaseModel] | None = Train
    path = "train"
    for part in rest.split("."):
        if model is None:
            return SpecError(f"unknown target '{target}': {path} is a value, not a table", where=where)
        if part not in model.model_fields:
            return SpecError(f"unknown target '{target}': {path} has no key '{part}'", where=where,
                             hint=close_matches(part, _keys(model)) or f"{path} holds {', '.join(_keys(model))}")
        model, path = _table_in(model.model_fields[part].annotation), f"{path}.{part}"
    return None


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or k for k, f in model.model_fields.items()]


def _table_in(ann: Any) -> type[BaseModel] | None:
    """The model a key's annotation holds (Optimizer of `optimizer`, Schedule of `str | Schedule`), else None."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    return next((m for a in typing.get_args(ann) if (m := _table_in(a)) is not None), None)


def check(spec: Any, skip: set[str] = set()) -> list[SpecError]:
    """The [sweep] table's targets and ranges (the values themselves: `value_errors`, once the spec compiles).
    `skip`: sections the data model found broken (`spec` holds their defaults): their targets are not judged."""
    errors: list[SpecError] = []
    for target, r in spec.sweep.items():
        where = f'sweep."{target}"'
        bad = None if target.partition(".")[0] in skip else target_error(target, spec, where)
        errors += ([bad] if bad else []) + range_errors(r, where)
    return errors


# ---- a trial's spec --------------------------------------------------------------------------------------------

def apply(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The spec a trial trains: a copy of `raw` without [sweep], each target set to its value (a table the spec gave
    as its name, `schedule = "cosine"`, becomes { name = "cosine", ... })."""
    out = copy.deepcopy({k: v for k, v in raw.items() if k != "sweep"})
    for target, value in values.items():
        *parents, last = target.split(".")
        table = out
        for part in parents:
            here = table.get(part)
            table[part] = here if isinstance(here, dict) else {"name": here} if isinstance(here, str) else {}
            table = table[part]
        table[last] = value
    return out


def value_errors(raw: dict[str, Any], spec: Any, compile_raw: Callable[[dict[str, Any]], Any]) -> list[SpecError]:
    """Each choice and each range end, written into the spec alone, compiled (`compile_raw`: the torch-free passes):
    a value a trial would fail on is reported at its place in [sweep], with the spec's own error."""
    errors: list[SpecError] = []
    for target, r in spec.sweep.items():
        for label, value in probes(r):
            try:
                compile_raw(apply(raw, {target: value}))
            except ArchcError as e:
                first = e.problems()[0]
                inner = f"{first.where}: {first.message}" if first.where else first.message
                errors.append(SpecError(f"{describe(value)} fails the spec: {inner}",
                                        where=f'sweep."{target}".{label}', hint=first.hint))
    return errors


def summary(spec: Any) -> str | None:
    """validate's line for a spec with [sweep]: 'sweep: params.width int [32, 512] log, train.batch_size choice
    [16, 32, 64]; archc sweep SPEC --trials N searches it', None without one."""
    if not spec.sweep:
        return None
    parts = [f"{target} {kind_of(r)} {describe(bounds(r), 80)}" + (" log" if r.log else "")
             + (f" step {r.step}" if r.step is not None else "") for target, r in spec.sweep.items()]
    return f"sweep: {', '.join(parts)}; `archc sweep SPEC --trials N` searches it"
