"""Every example of every emitting op: the ONNX its `emit` hook writes (onnx.checker, full check) run by ONNX Runtime
against the torch module of `to_torch` with the same weights, at two batch sizes (and two sizes of each symbolic
axis). The two lowerings are independent implementations: a wrong formula in either fails here."""
from __future__ import annotations

import onnx
import pytest

from archc.emit.graph import emit_model, to_proto
from archc.errors import ExportError
from archc.export.onnx import parity
from archc.lower import lower
from archc.ops import REGISTRY
from archc.ops.base import NOT_EMITTING, emits
from archc.pipeline import compile_spec

CASES = [(name, i, ex) for name, cls in sorted(REGISTRY.items()) if name not in NOT_EMITTING
         for i, ex in enumerate(cls.examples)]


def emitted(spec) -> tuple:
    """(compiled graph, its torch module, the emitted ONNX's bytes), checked by onnx.checker."""
    result = compile_spec(spec)
    module = lower(result.graph).eval()
    model = to_proto(emit_model(result.graph, module.state_dict()))
    onnx.checker.check_model(model, full_check=True)
    return result.graph, module, model.SerializeToString()


def test_every_op_emits_or_is_listed():
    """An op registers with its emitter (ops.base.register); the list of those still to do only names real ops that
    do not emit, so it shrinks as emitters land."""
    assert NOT_EMITTING <= set(REGISTRY), sorted(NOT_EMITTING - set(REGISTRY))
    for name, cls in REGISTRY.items():
        assert emits(cls) != (name in NOT_EMITTING), name


@pytest.mark.parametrize("name,i,ex", CASES, ids=[f"{n}-{i}" for n, i, _ in CASES])
def test_op_emits_what_torch_computes(name, i, ex):
    graph, module, blob = emitted(ex.spec(name, f"emit-{name}", "regression"))
    worst, tol, checks = parity(module, graph, blob)
    assert len({c["batch"] for c in checks}) >= 2 and worst <= tol


def test_activation_sugar_and_names():
    """`act` sugar emits after its node; ONNX names are spec ids, initializers the state_dict's names."""
    spec = {"archc": 1, "model": {"name": "sugar"}, "inputs": {"x": {"shape": [5]}}, "task": {"kind": "regression"},
            "layers": [{"op": "linear", "id": "fc", "out_features": 4, "act": {"op": "gelu", "approximate": "tanh"}},
                       {"op": "linear", "id": "out", "out_features": 2}]}
    graph, module, blob = emitted(spec)
    parity(module, graph, blob)
    model = onnx.load_from_string(blob)
    assert [n.name for n in model.graph.node] == ["fc", "fc/gelu", "out"]
    assert {t.name for t in model.graph.initializer} == set(module.state_dict())
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["out"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_a_wrong_formula_fails(monkeypatch):
    """The check can fail: an emitter that drops linear's bias is caught by ONNX Runtime vs torch."""
    cls = REGISTRY["linear"]
    monkeypatch.setattr(cls, "emit", lambda self, e: e.linear(e.ins[0], "", False, rank=e.types[0].rank))
    ex = cls.examples[0]
    graph, module, blob = emitted(ex.spec("linear", "wrong", "regression"))
    with pytest.raises(ExportError, match="expected ONNX Runtime to match torch"):
        parity(module, graph, blob)


def test_a_spec_with_an_op_that_does_not_emit_is_refused(monkeypatch):
    """An op on NOT_EMITTING (linear, for the test: the list shrinks to nothing) is refused, named, at its layer."""
    monkeypatch.setattr("archc.emit.graph.NOT_EMITTING", frozenset({"linear"}))
    spec = {"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [3]}}, "task": {"kind": "regression"},
            "layers": [{"op": "linear", "id": "fc", "out_features": 4}]}
    result = compile_spec(spec)
    module = lower(result.graph)
    with pytest.raises(ExportError, match="received linear") as e:
        emit_model(result.graph, module.state_dict())
    assert e.value.where.endswith("(fc)")
