"""Turn pydantic validation errors into archc errors with spec paths and expected/received wording."""
from __future__ import annotations

import difflib
import functools
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from archc.errors import SpecError, describe
from archc.ops.base import ID_PATTERN

_PATTERN_WORDS = {ID_PATTERN: "a name of letters, digits and _ that does not start with a digit"}


def at(where: str, sub: str) -> str:
    """`where` plus a sub-location, kept before any block context: at('layers[1] in layers[0]', '.act')."""
    head, sep, context = where.partition(" in ")
    return f"{head}{sub}{sep}{context}"


def layer_label(raw: Any) -> str:
    """' (fc2)' for a layer with an id, to follow its index in locations: 'layers[2] (fc2)'."""
    name = raw.get("id") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not name.strip():
        return ""
    return f" ({name if len(name) <= 40 else name[:39] + '…'})"


def spec_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    """('layers', 3, 'out_features') -> 'layers[3].out_features'."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("from_", "with_"):
            out += ("." if out else "") + part[:-1]
        else:
            out += ("." if out else "") + str(part)
    return out


def close_matches(word: str, options: list[str] | set[str]) -> str:
    """' (did you mean X?)' when something is close, else ''."""
    match = difflib.get_close_matches(word, list(options), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(m) for m in match)}?" if match else ""


# pydantic's wording -> archc's "expected X" wording, by error type
_WANTS = {
    "int_type": "an integer", "int_parsing": "an integer", "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string", "bool_type": "a boolean", "list_type": "a list",
    "tuple_type": "a list", "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table",
    "finite_number": "a finite number", "none_required": "nothing (null)",
}
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def _want(err: dict[str, Any]) -> str:
    """What a pydantic error says was expected, in archc's words ('an integer', 'a value >= 1')."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "string_type" and "constrained-str" in err["loc"]:  # the pattern-checked str of a union: a Name
        return "a name"
    if kind in _WANTS:
        return _WANTS[kind]
    if kind in _BOUNDS:
        key, sign = _BOUNDS[kind]
        return f"a value {sign} {ctx.get(key)}"
    if kind == "literal_error":
        return ctx.get("expected", "one of the allowed values")
    if kind == "too_short":
        n = ctx.get("min_length")
        return f"at least {n} item{'s' if n != 1 else ''}"
    if kind in ("too_long", "string_too_long"):
        n = ctx.get("max_length")
        return f"at most {n} {'characters' if kind == 'string_too_long' else 'items'}"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        return _PATTERN_WORDS.get(pattern, f"text matching {pattern}")
    text = re.sub(r"^(Input should be |Value error, )", "", err["msg"])
    return text[0].lower() + text[1:] if text else "a valid value"


def _message(err: dict[str, Any], model: type[BaseModel] | None, loc: tuple) -> tuple[str, str]:
    kind, received = err["type"], err.get("input")
    field = str(loc[-1]) if loc else ""
    # the spec's top level holds sections ([model], [[layers]]); everything below holds attributes
    noun = "section" if len(loc) == 1 and model is not None and model.__name__ == "Spec" else "attribute"
    if kind == "missing":
        return f"missing required {noun} '{field.rstrip('_')}'", ""
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        hint = close_matches(field, allowed)
        if not hint and allowed:
            hint = "expected one of: " + ", ".join(sorted(allowed))
        return f"unknown {noun} '{field}'", hint
    return f"expected {_want(err)}, received {describe(received)}", ""


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> set[str]:
    """Field names (by alias) of the sub-model at `loc`, for 'did you mean' hints."""
    keyed = False  # the previous field was a dict: this part is a user's key ('inputs.image')
    for part in loc:
        if model is None:
            return set()
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return set()
        ann = field.annotation
        keyed = typing.get_origin(ann) is dict or any(typing.get_origin(a) is dict for a in typing.get_args(ann))
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            model = _model_in(ann)
    if model is None:
        return set()
    return {f.alias or k for k, f in model.model_fields.items()}


def _model_in(ann: Any) -> type[BaseModel] | None:
    """The first model inside an annotation: `Input` of dict[Name, Input], `ColumnDecl` of
    dict[str, Literal[...] | ColumnDecl] | None."""
    for a in typing.get_args(ann):
        found = a if isinstance(a, type) and issubclass(a, BaseModel) else _model_in(a)
        if found is not None:
            return found
    return None


_UNION_TAGS = {"int", "float", "str", "bool", "list", "dict", "tuple", "none"}


def _is_tag(part: Any) -> bool:
    """Union-member tags pydantic puts in locations ('int', 'list[int]', "literal['same']", 'Schedule')."""
    return isinstance(part, str) and (part in _UNION_TAGS or part in _union_models() or any(c in part for c in "[(-")
                                      or part.startswith(("constrained", "function", "lax", "strict")))


@functools.cache
def _union_models() -> frozenset[str]:
    """Names of the spec models that appear as union members (pydantic tags errors with them)."""
    from archc.language import model as m
    names: set[str] = set()
    for cls in vars(m).values():
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            for f in cls.model_fields.values():
                names.update(_members(f.annotation))
    return frozenset(names)


def _members(ann: Any) -> set[str]:
    """Model names in a union, also inside a container (`dict[str, Literal[...] | ColumnDecl]`)."""
    args = getattr(ann, "__args__", ())
    out = {a.__name__ for a in args if isinstance(a, type) and issubclass(a, BaseModel)}
    for a in args:
        out |= _members(a) if typing.get_origin(a) is not None else set()
    return out


def _groups(exc: ValidationError, model: type[BaseModel] | None) -> dict[tuple, list[dict]]:
    """Errors grouped by spec location (union tags removed), keeping only the relevant ones."""
    groups: dict[tuple, list[dict]] = {}
    for err in exc.errors():
        key = tuple(p for p in err["loc"] if not _is_tag(p))
        groups.setdefault(key, []).append(err)
    # a union whose list member matched ('kernel_size = [3, -3]'): report the item, not "expected an integer"
    for key in [k for k, errs in groups.items() if all(len(e["loc"]) > len(k) for e in errs)]:
        if any(len(k) > len(key) and k[:len(key)] == key for k in groups):
            del groups[key]
    # 'out_feature' (unknown) explains 'out_features' (missing): report it once, with its "did you mean"
    for key, errs in list(groups.items()):
        if errs[0]["type"] == "extra_forbidden":
            match = difflib.get_close_matches(str(key[-1]), sorted(_fields_at(model, key[:-1])), n=1, cutoff=0.6)
            missing = key[:-1] + (match[0],) if match else None
            if missing in groups and groups[missing][0]["type"] == "missing":
                del groups[missing]
    return groups


def from_validation(exc: ValidationError, model: type[BaseModel], prefix: str = "",
                    where: str = "") -> list[SpecError]:
    """One SpecError per problem; `where` labels the layer ('layers[3] (fc2)')."""
    out: list[SpecError] = []
    for key, errs in _groups(exc, model).items():
        finite = [e for e in errs if e["type"] == "finite_number"]
        errs = finite[:1] or errs  # nan or inf: a number was meant, and it is not finite (not "a bool or a str")
        message, hint = _message(errs[0], model, key)
        if len(errs) > 1 and message.startswith("expected "):
            # a union: "expected an integer or a list, received 'a'"
            wants = list(dict.fromkeys(_want(e) for e in errs))
            if "a number" in wants and "an integer" in wants:
                wants.remove("an integer")
            either = ", ".join(wants[:-1]) + " or " + wants[-1] if len(wants) > 1 else wants[0]
            message = f"expected {either}, received {describe(errs[0].get('input'))}"
        path = spec_path(key)
        label = at(where, f".{path}") if where and path else (where or spec_path(key, prefix))
        out.append(SpecError(message, where=label, hint=hint))
    return out
