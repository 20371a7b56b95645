"""The parity check's ONNX Runtime session (archc.runtime.session.check_session): ORT's graph optimizers on up to
OPTIMIZED_UP_TO spec nodes, off past it (they grow faster than linearly), and either way the check still compares
ONNX Runtime's outputs with torch's: a model whose file and module disagree fails it."""
from __future__ import annotations

import onnxruntime as ort
import pytest
import torch

import archc.runtime.session as session
from archc.errors import ExportError
from archc.export import export
from archc.export.onnx import parity
from archc.lower import lower
from archc.pipeline import compile_spec

SPEC = {"archc": 1, "model": {"name": "chain"}, "inputs": {"x": {"shape": [8]}},
        "layers": [{"id": f"fc{i}", "op": "linear", "out_features": 8, "act": "relu"} for i in range(4)]}


def _level(sess) -> ort.GraphOptimizationLevel:
    return sess.get_session_options().graph_optimization_level


def _exported(tmp_path):
    c = compile_spec(SPEC)
    module = lower(c.graph, seed=0)
    export(c, tmp_path / "m.onnx", module=module)
    return c.graph, module, str(tmp_path / "m.onnx")


def test_optimizers_run_up_to_the_limit_and_not_past_it(tmp_path):
    _, _, path = _exported(tmp_path)
    assert _level(session.check_session(path, nodes=session.OPTIMIZED_UP_TO)) == \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert _level(session.check_session(path)) == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert _level(session.check_session(path, nodes=session.OPTIMIZED_UP_TO + 1)) == \
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL


@pytest.mark.parametrize("limit", [0, 10_000])  # the graph as written, and optimized
def test_parity_still_compares_with_torch(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(session, "OPTIMIZED_UP_TO", limit)
    graph, module, path = _exported(tmp_path)
    worst, tol, checks = parity(module, graph, path)
    assert checks and worst <= tol
    with torch.no_grad():
        module.get_submodule("fc2").weight.add_(0.5)  # the file keeps the old weights: they must disagree
    with pytest.raises(ExportError, match="expected ONNX Runtime to match torch"):
        parity(module, graph, path)
