"""The spec's JSON Schema (for editors: `#:schema archc.schema.json` in a TOML spec) and op listings."""
from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, create_model

from archc.ops import REGISTRY, activation_names
from archc.language.model import Block, Spec, Use

PARAM_REF = {"type": "string", "pattern": r"^\$([A-Za-z_][A-Za-z0-9_]*|\{.*\})$",
             "description": "a parameter reference: \"$name\" or \"${expression}\""}


def json_schema() -> dict[str, Any]:
    act_table = {"type": "object", "required": ["op"], "properties": {"op": {"enum": activation_names()}},
                 "description": 'an activation with attributes: { op = "gelu", approximate = "tanh" }'}
    """The whole spec's schema; layers are a union discriminated on `op`, or a block `use`."""
    ops = tuple(REGISTRY[name] for name in sorted(REGISTRY))
    layer = Union[Annotated[Union[ops], Field(discriminator="op")], Use]  # type: ignore[valid-type]
    block = create_model("Block", __base__=Block, layers=(list[layer], Field(min_length=1)))  # type: ignore
    spec = create_model("Spec", __base__=Spec, layers=(list[layer], Field(min_length=1)),  # type: ignore
                        blocks=(dict[str, block], Field(default_factory=dict)))
    schema = TypeAdapter(spec).json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "archc spec"
    defs = schema.get("$defs", {})
    defs["ParamRef"] = PARAM_REF
    for cls in ops:
        props = defs.get(cls.__name__, {}).get("properties", {})
        for key, prop in props.items():
            if key == "act":
                prop["anyOf"] = [{"enum": activation_names()}, act_table, {"type": "null"}]
            elif key not in ("op", "id", "from"):
                props[key] = {"anyOf": [prop, {"$ref": "#/$defs/ParamRef"}]}  # "$width" is allowed anywhere
    return schema


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
