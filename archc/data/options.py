"""A data source's typed options (`?key=value` after its argument, or keywords to `archc.data.load`), without
pydantic: `archc infer` reads sources too, and pydantic (~0.1 s to import) would be most of what it adds to a plain
ONNX Runtime script's start-up.

A source's options are a frozen dataclass whose fields are made by `option` (default, title, description, lower
bound). `build` reads values into it as pydantic's lax mode reads them (text for numbers and switches: '3', '3.0',
'1_000', 'yes', 'off'; tests/data/test_options.py checks it against pydantic) and raises `OptionError` with
what pydantic's first error would say (its type, message and context), so messages read the same.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_INT_TEXT = re.compile(r"[+-]?[0-9]+(_[0-9]+)*(\.0+)?")  # pydantic reads '3.0' and '1_000' as whole numbers


@dataclass(frozen=True)
class SourceOptions:
    """Base of a source's typed options: fields made with `option` (none by default)."""


@dataclass(frozen=True)
class Field:
    """One option as help texts and messages read it: its type, default, title (the metavar), description and
    lower bound."""

    name: str
    annotation: Any
    default: Any
    title: str | None
    description: str | None
    ge: int | None
    file: bool = False


class OptionError(ValueError):
    """A value an option does not take: `err` as pydantic's first error (type, msg, ctx, loc, input)."""

    def __init__(self, key: str, value: Any, kind: str, msg: str, ctx: dict | None = None) -> None:
        super().__init__(f"{key}: {msg}")
        self.err = {"type": kind, "loc": (key,), "msg": msg, "input": value, "ctx": ctx}


def option(default: Any, *, title: str | None = None, description: str | None = None, ge: int | None = None,
           file: bool = False) -> Any:
    """A field of a SourceOptions dataclass; `file`: its value names a file (read like a path argument)."""
    return dataclasses.field(default=default, metadata={"title": title, "description": description, "ge": ge,
                                                        "file": file})


@functools.cache
def fields(cls: type[SourceOptions]) -> dict[str, Field]:
    """The options of `cls` by name, in declaration order, types evaluated."""
    hints = typing.get_type_hints(cls)
    return {f.name: Field(f.name, hints[f.name], f.default, f.metadata.get("title"), f.metadata.get("description"),
                          f.metadata.get("ge"), f.metadata.get("file", False)) for f in dataclasses.fields(cls)}


def build(cls: type[SourceOptions], values: dict[str, Any]) -> SourceOptions:
    """`cls` from `values` (names it declares), each read as its type; the first bad one (in declaration order)
    raises OptionError."""
    read = {}
    for name, f in fields(cls).items():
        if name in values:
            read[name] = _bounded(f, _read(f.name, values[name], f.annotation), values[name])
    return cls(**read)


def _bounded(f: Field, value: Any, given: Any) -> Any:
    """`value` (read from `given`) if at least the field's lower bound."""
    if f.ge is not None and value is not None and value < f.ge:
        raise OptionError(f.name, given, "greater_than_equal", f"Input should be greater than or equal to {f.ge}",
                          {"ge": f.ge})
    return value


def _read(key: str, value: Any, annotation: Any) -> Any:
    """`value` as `annotation` says (bool, int, str, a Literal, or one of those or None)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _read(key, value, inner)
    if typing.get_origin(annotation) is Literal:
        if value in args and all(type(value) is type(a) for a in args if a == value):
            return value
        expected = " or ".join(filter(None, [", ".join(map(repr, args[:-1])), repr(args[-1])]))
        raise OptionError(key, value, "literal_error", f"Input should be {expected}", {"expected": expected})
    return READERS[annotation](key, value)


def _bool(key: str, value: Any) -> bool:
    """A switch: True/False, 0/1, or text such as 'true', 'yes', 'on', '0', 'off' (any case)."""
    value = value.decode() if isinstance(value, bytes) else value
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in TRUE | FALSE:
        return value.lower() in TRUE
    if not isinstance(value, (int, float, str)) or isinstance(value, float) and not value.is_integer():
        raise OptionError(key, value, "bool_type", "Input should be a valid boolean")
    raise OptionError(key, value, "bool_parsing", "Input should be a valid boolean, unable to interpret input")


def _int(key: str, value: Any) -> int:
    """A whole number: an int, a float without a fraction, or text such as ' 3 ', '+3', '3.0', '1_000'."""
    value = value.decode() if isinstance(value, bytes) else value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OptionError(key, value, "finite_number", "Input should be a finite number")
        if value.is_integer():
            return int(value)
        raise OptionError(key, value, "int_from_float", "Input should be a valid integer, got a number with a "
                                                        "fractional part")
    if isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text):
            return int(text.partition(".")[0])
        raise OptionError(key, value, "int_parsing", "Input should be a valid integer, unable to parse string as "
                                                     "an integer")
    raise OptionError(key, value, "int_type", "Input should be a valid integer")


def _str(key: str, value: Any) -> str:
    """Text (never a number: pydantic's lax mode does not turn 3 into '3')."""
    value = value.decode() if isinstance(value, bytes) else value
    if isinstance(value, str):
        return value
    raise OptionError(key, value, "string_type", "Input should be a valid string")


READERS = {bool: _bool, int: _int, str: _str}
