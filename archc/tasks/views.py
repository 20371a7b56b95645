"""What the tasks read of the objects other packages pass them, as protocols: the expanded graph (archc.graph.ir.Graph)
and an opened model (archc.runtime.session.Model).

archc.graph and archc.runtime import the tasks (the infer pass applies a task's rule; `archc infer` presents through
one), so the tasks name neither, not even for type checking: the package graph stays a DAG
(tests/test_import_cycles.py counts TYPE_CHECKING imports too). tests/test_protocols.py checks that the real classes have every
member listed here.
"""
from __future__ import annotations

from typing import Any, Protocol


class GraphView(Protocol):
    """The expanded graph as a task's torch-free rules read it (validate, export)."""

    inputs: dict[str, Any]  # name -> archc.ops.base.TensorType
    outputs: list[str]
    vocab: dict[str, int | str]

    def type_of(self, name: str) -> Any: ...

    def score_kind(self, name: str) -> str: ...


class ModelView(Protocol):
    """An opened ONNX model as `archc infer`'s presentation reads it (numpy only)."""

    path: str
    metadata: dict[str, str]
    task: dict | None
    inputs: dict[str, Any]  # name -> archc.runtime.session.TensorSig
    outputs: dict[str, Any]
