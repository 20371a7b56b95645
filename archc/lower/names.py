"""Python names for spec ids: the one mapping lowering uses for every name it creates.

A spec id may be any name the spec language allows (`training`, `forward`, `None`, `__class__`, ...), so the
compiler owns the names it gives torch: an id that is safe as a submodule attribute keeps its spelling (the
generated code and ONNX node names read as the spec does), any other id gets the prefix `id_`. The mapping is
injective: kept names never start with `id_` or `_`, escaped ones always start with `id_`, and the names
lowering adds for activations start with `_`, so no two ids and no id and activation share a name.
"""
from __future__ import annotations

import keyword
from functools import cache

from torch import fx, nn

ESCAPE = "id_"
OWN_ATTRIBUTES = frozenset({"archc_outputs"})  # attributes archc sets on the GraphModule (lower.fx)
CODE_NAMES = frozenset({"self"})  # names the generated forward binds that fx does not reserve


@cache
def reserved() -> frozenset[str]:
    """Attribute names of a GraphModule and of the plain Modules that hold block instances (class and instance)."""
    gm = fx.GraphModule(nn.Module(), fx.Graph())
    return frozenset(dir(gm)) | frozenset(vars(gm)) | frozenset(dir(nn.Module())) | OWN_ATTRIBUTES


def kept(segment: str) -> bool:
    """True when `segment` can be a submodule attribute as written (and cannot be mistaken for an escaped name)."""
    return (segment.isidentifier() and not keyword.iskeyword(segment) and not segment.startswith(("_", ESCAPE))
            and segment not in reserved())


def segment_name(segment: str) -> str:
    """One dot-free part of a node id -> its attribute name; repeat indices ('0') stay (fx reads them by getattr)."""
    return segment if segment.isdigit() or kept(segment) else ESCAPE + segment


def module_path(node_id: str) -> str:
    """A node id ('stage1.0.conv1', dotted inside blocks) -> the submodule path holding its op."""
    return ".".join(segment_name(s) for s in node_id.split("."))


def act_path(node_id: str, act: str) -> str:
    """The submodule path of a node's `act` sugar: beside the node's, as '_ID__ACT' (outside every id's image)."""
    *parents, last = module_path(node_id).split(".")
    return ".".join([*parents, f"_{last}__{act}"])


def value_name(name: str) -> str:
    """The fx value (or forward argument) name for a node id or input name.

    fx makes a hint unique and keeps it off keywords, builtins and its own globals (`torch`), but not off
    `self`, forward's first argument, and it writes a placeholder's target verbatim as the argument name."""
    hint = name.replace(".", "_")
    return ESCAPE + hint if hint in CODE_NAMES or keyword.iskeyword(hint) else hint


def class_name(model_name: str) -> str:
    """The generated module's class name, from the spec's model name ('digit-classifier' -> 'digit_classifier')."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in model_name)
    if not out or out[0].isdigit() or keyword.iskeyword(out):
        out = f"m_{out}"
    return out
