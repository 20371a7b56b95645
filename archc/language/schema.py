"""The spec's JSON Schema (for editors: `#:schema archc.schema.json` in a TOML spec) and op listings.

Standard validators (taplo, check-jsonschema, VS Code) ignore pydantic's `discriminator`, so a union of layer
kinds written as `oneOf` reports a typo inside one layer as "not valid under any of the schemas" for the whole
layer. Every union here is instead keyed: a layer is `if {op: const X} then {op X's schema}` per op (plus an
`op` enum), a table-or-name choice is `if {type: object} then ... else ...`, and a "$param" reference is
`if {$-string} then ParamRef else ...`, so each error is reported at the attribute that is wrong.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from archc.ops import REGISTRY, activation_names
from archc.language.model import Block, Spec, Use

DRAFT = "https://json-schema.org/draft/2020-12/schema"
PARAM_REF = {"type": "string", "pattern": r"^\$([A-Za-z_][A-Za-z0-9_]*|\{.*\})$",
             "description": "a parameter reference: \"$name\" or \"${expression}\""}
IS_REF = {"type": "string", "pattern": r"^\$"}  # what the expand pass substitutes (archc/language/exprs.py)
SCHEMA_KEY = {"type": "string", "description": "the JSON Schema this spec is written against (for editors; "
                                               "archc ignores it)"}
# An input has a `shape`, or (tabular) `columns` and no shape: keyed on `columns`, so a stray shape is reported at
# the shape and a missing one at the input, as archc reports them (archc/language/columns.py)
# (`not` and not `false`: python-jsonschema reports a false schema at the table, not at the shape)
SHAPE_OR_COLUMNS = {"if": {"required": ["columns"]},
                    "then": {"properties": {"shape": {"not": {"description": "no shape with columns: a tabular "
                                                                             "input's width follows from them"}}}},
                    "else": {"required": ["shape"]}}
WIRING = ("op", "id", "from")                 # never substituted: names, not values
KEEP_OUTSIDE = ("title", "description", "default", "examples")  # editors show these on hover


def json_schema() -> dict[str, Any]:
    """The whole spec's schema: layers keyed on `op` (or `use`), every union keyed so errors are located."""
    ops = [REGISTRY[name] for name in sorted(REGISTRY)]
    models: list[type[BaseModel]] = [Spec, Block, Use, *ops]
    refs, top = models_json_schema([(m, "validation") for m in models], by_alias=True)
    defs: dict[str, Any] = top["$defs"]
    name_of = {m: refs[(m, "validation")]["$ref"].rsplit("/", 1)[1] for m in models}
    for cls in ops:
        _allow_refs(defs[name_of[cls]]["properties"])
    use_props = defs[name_of[Use]]["properties"]  # `repeat = "$layers"`: expand substitutes it like an attribute
    use_props["repeat"] = _ref_or(use_props["repeat"])
    defs["Layer"] = _layer(name_of[Use], {cls.name(): name_of[cls] for cls in ops})
    defs["ParamRef"] = PARAM_REF
    defs["Input"].update(SHAPE_OR_COLUMNS)
    layers_item = {"$ref": "#/$defs/Layer"}
    defs[name_of[Block]]["properties"]["layers"]["items"] = layers_item
    schema = {"$schema": DRAFT, "title": "archc spec", **defs.pop(name_of[Spec])}
    schema["properties"] = {"$schema": SCHEMA_KEY, **schema["properties"]}
    schema["properties"]["layers"]["items"] = layers_item
    schema["$defs"] = defs
    return _keyed(schema)


def _layer(use: str, ops: dict[str, str]) -> dict[str, Any]:
    """A layer: `use = BLOCK` (the Use table), else `op` from the enum, then that op's own table."""
    keyed = [{"if": {"properties": {"op": {"const": op}}, "required": ["op"]}, "then": {"$ref": f"#/$defs/{d}"}}
             for op, d in ops.items()]
    return {"type": "object", "description": "a layer: `op = NAME` and that op's attributes (`archc ops NAME`), "
                                             "or `use = BLOCK`",
            "properties": {"op": {"enum": list(ops), "description": "the op (`archc ops` lists every op)"}},
            "allOf": [{"if": {"required": ["use"]}, "then": {"$ref": f"#/$defs/{use}"},
                       "else": {"required": ["op"]}}, *keyed]}


def _allow_refs(props: dict[str, Any]) -> None:
    """Op attributes (and values in their lists) may be "$name" / "${expr}" references: keyed on a leading $."""
    for key, prop in props.items():
        if key == "act":  # a name, or a table of an activation op and its attributes (checked by the expander)
            prop.pop("anyOf", None)
            prop.pop("type", None)
            prop.update({"if": {"type": "object"}, "then": {"type": "object", "required": ["op"], "properties": {
                "op": {"enum": activation_names()}}}, "else": {"enum": [*activation_names(), None]}})
        if key not in WIRING:
            props[key] = _ref_or(prop)


def _ref_or(prop: dict[str, Any]) -> dict[str, Any]:
    """`prop`, or a parameter reference where a "$..." string stands (also inside lists and union branches)."""
    outside = {k: prop[k] for k in KEEP_OUTSIDE if k in prop}
    inner = {k: v for k, v in prop.items() if k not in KEEP_OUTSIDE}
    if isinstance(inner.get("items"), dict):
        inner["items"] = _ref_or(inner["items"])
    if "anyOf" in inner:
        inner["anyOf"] = [_items_ref_or(b) for b in inner["anyOf"]]
    return {**outside, "if": IS_REF, "then": {"$ref": "#/$defs/ParamRef"}, "else": inner}


def _items_ref_or(branch: dict[str, Any]) -> dict[str, Any]:
    if isinstance(branch.get("items"), dict):
        return {**branch, "items": _ref_or(branch["items"])}
    return branch


def _keyed(node: Any) -> Any:
    """Every `anyOf` with one table branch becomes `if {type: object} then TABLE else REST` (walks the tree)."""
    if isinstance(node, list):
        return [_keyed(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _keyed(v) for k, v in node.items()}
    branches = node.get("anyOf")
    merged = _by_type(branches) if isinstance(branches, list) else None
    if merged is not None:
        node.pop("anyOf")
        node.update(merged)
    elif isinstance(branches, list):
        tables = [b for b in branches if "$ref" in b or b.get("type") == "object"]
        rest = [b for b in branches if b not in tables]
        if len(tables) == 1 and rest:
            node.pop("anyOf")
            node.update({"if": {"type": "object"}, "then": tables[0],
                         "else": rest[0] if len(rest) == 1 else {"anyOf": rest}})
    return node


BY_TYPE = {"integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
           "string": {"pattern", "minLength", "maxLength"},
           "array": {"items", "prefixItems", "minItems", "maxItems", "uniqueItems"},
           "boolean": set(), "null": set()}
BY_TYPE["number"] = BY_TYPE["integer"]


def _by_type(branches: list[Any]) -> dict[str, Any] | None:
    """`anyOf` branches of distinct JSON types whose keywords each constrain only their own type, as one schema
    with `type: [...]` (exactly the same values), so a wrong type reads "is not of type 'integer', 'array'"."""
    if not all(isinstance(b, dict) for b in branches):
        return None
    if all(set(b) - {"title"} <= {"enum", "type"} and ("enum" in b or b.get("type") == "null") for b in branches):
        return {"enum": [v for b in branches for v in b.get("enum", [None])]}  # Literal[...] | None
    if {"type": "integer"} in branches and any(b.get("type") == "number" for b in branches):
        branches = [b for b in branches if b != {"type": "integer"}]  # an integer is a number
    types = [b.get("type") for b in branches]
    if not all(isinstance(t, str) and t in BY_TYPE for t in types) or len(set(types)) < len(types) \
            or {"integer", "number"} <= set(types):
        return None
    merged: dict[str, Any] = {"type": types}
    for b, t in zip(branches, types):
        own = {k: v for k, v in b.items() if k not in ("type", "title")}
        if not set(own) <= BY_TYPE[t]:
            return None  # a keyword that constrains every type (enum, const): the branches must stay apart
        merged.update(own)
    return merged


def _type_name(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "|".join(map(repr, prop["enum"]))
    if "const" in prop:
        return repr(prop["const"])
    if "anyOf" in prop:
        return " | ".join(_type_name(p) for p in prop["anyOf"] if p.get("type") != "null") + (
            " | none" if any(p.get("type") == "null" for p in prop["anyOf"]) else "")
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list[{_type_name(prop.get('items', {}))}]"
    return {"integer": "int", "number": "float", "boolean": "bool", "string": "str"}.get(kind, kind)


def op_table() -> list[dict[str, Any]]:
    """Every registered op: name, family, doc, attributes with type, default and description."""
    out = []
    for name in sorted(REGISTRY, key=lambda n: (REGISTRY[n].family, n)):
        cls = REGISTRY[name]
        props = cls.model_json_schema()["properties"]
        attrs = []
        for key, f in cls.attribute_fields().items():
            attrs.append({"name": key, "type": _type_name(props.get(key, {})),
                          "default": None if f.is_required() else f.get_default(call_default_factory=True),
                          "required": f.is_required(), "doc": f.description or ""})
        out.append({"op": name, "family": cls.family, "doc": cls.doc(), "inputs": list(cls.arity),
                    "activation": cls.is_activation, "attributes": attrs})
    return out
