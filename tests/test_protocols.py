"""The protocols a package reads another's objects through (so it need not import it, the package graph a DAG):
the real classes have every member, and the readers use no member the protocol leaves out."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import archc
from archc.emit.builder import Emitter, KVCache
from archc.graph.ir import Graph
from archc.ops.base import Emitter as EmitterProtocol, KVCacheMode
from archc.runtime.session import Model
from archc.tasks.views import GraphView, ModelView

ROOT = Path(archc.__file__).parent


def members(protocol: type) -> set[str]:
    """The attributes and methods a Protocol class declares (its own, not Protocol's)."""
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {k for k, v in vars(protocol).items() if (callable(v) or isinstance(v, property)) and not k.startswith("_")}
    return names


def instance_attributes(cls: type) -> set[str]:
    """Names `self.X = ...` / `self.X: T = ...` assigns anywhere in cls's source, plus its class attributes."""
    import inspect
    tree = ast.parse(inspect.getsource(cls))
    targets = [t for node in ast.walk(tree) for t in
               (node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else [])]
    flat = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]  # self.a, self.b = ...
    found = {t.attr for t in flat if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    return found | set(dir(cls)) | set(getattr(cls, "__dataclass_fields__", {}))


@pytest.mark.parametrize("protocol, real", [(EmitterProtocol, Emitter), (KVCacheMode, KVCache), (GraphView, Graph),
                                            (ModelView, Model)], ids=["emitter", "kv cache", "graph", "model"])
def test_the_real_class_has_every_member(protocol, real):
    missing = members(protocol) - instance_attributes(real)
    assert members(protocol) and not missing, f"{real.__qualname__} lacks {sorted(missing)}"


def used(folder: str, variable: str) -> set[str]:
    """Every `variable.NAME` the modules of archc/<folder> read (NAME a public member, calls included)."""
    out: set[str] = set()
    for path in (ROOT / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == variable:
                out.add(node.attr)
    return out


def test_ops_write_only_through_the_emitter_protocol():
    extra = used("ops", "e") - members(EmitterProtocol)
    assert used("ops", "e") and not extra, f"the ops' emit hooks use e.{sorted(extra)}: add them to the protocol"


def test_tasks_read_only_what_the_views_declare():
    graph_extra = used("tasks", "graph") - members(GraphView)
    model_extra = used("tasks", "model") - members(ModelView)
    assert not graph_extra, f"the tasks read graph.{sorted(graph_extra)}: add them to GraphView"
    assert not model_extra, f"the tasks read model.{sorted(model_extra)}: add them to ModelView"

