"""Turn pydantic validation errors into archc errors with spec paths and expected/received wording."""
from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from archc.errors import SpecError, describe
from archc.ops.base import ID_PATTERN

_PATTERN_WORDS = {ID_PATTERN: "a name of letters, digits and _ that does not start with a digit"}


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


def _message(err: dict[str, Any], model: type[BaseModel] | None, loc: tuple) -> tuple[str, str]:
    kind, msg, received = err["type"], err["msg"], err.get("input")
    field = str(loc[-1]) if loc else ""
    if kind == "missing":
        return f"missing required attribute '{field.rstrip('_')}'", ""
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        hint = close_matches(field, allowed)
        if not hint and allowed:
            hint = "expected one of: " + ", ".join(sorted(allowed))
        return f"unknown attribute '{field}'", hint
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        want = _PATTERN_WORDS.get(pattern, f"text matching {pattern}")
        return f"expected {want}, received {describe(received)}", ""
    text = re.sub(r"^Input should be ", "", msg)
    text = re.sub(r"^Value error, ", "", text)
    text = text[0].lower() + text[1:] if text else text
    return f"expected {text}, received {describe(received)}", ""


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> set[str]:
    """Field names (by alias) of the sub-model at `loc`, for 'did you mean' hints."""
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return set()
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            model = next((a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)),
                         None)
    if model is None:
        return set()
    return {f.alias or k for k, f in model.model_fields.items()}


_UNION_TAGS = {"int", "float", "str", "bool", "list", "dict", "tuple", "none"}


def _is_tag(part: Any) -> bool:
    """Union-member tags pydantic puts in locations ('int', 'list[int]', "literal['same']")."""
    return isinstance(part, str) and (part in _UNION_TAGS or any(c in part for c in "[(-")
                                      or part.startswith(("constrained", "function", "lax", "strict")))


def from_validation(exc: ValidationError, model: type[BaseModel], prefix: str = "",
                    where: str = "") -> list[SpecError]:
    """One SpecError per problem; `where` labels the layer ('layers[3] (fc2)')."""
    groups: dict[tuple, list[dict]] = {}
    for err in exc.errors():
        key = tuple(p for p in err["loc"] if not _is_tag(p))
        groups.setdefault(key, []).append(err)
    out: list[SpecError] = []
    for key, errs in groups.items():
        message, hint = _message(errs[0], model, key)
        if len(errs) > 1 and message.startswith("expected "):
            # a union: "expected a valid integer or a valid list, received 'a'"
            wants = []
            for e in errs:
                m, _ = _message(e, model, key)
                want = m.removeprefix("expected ").rsplit(", received ", 1)[0]
                if want not in wants:
                    wants.append(want)
            message = f"expected {' or '.join(wants)}, received {describe(errs[0].get('input'))}"
        path = spec_path(key)
        label = f"{where}.{path}" if where and path else (where or spec_path(key, prefix))
        out.append(SpecError(message, where=label, hint=hint))
    return out
