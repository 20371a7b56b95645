"""Lowering: the torch module built from a graph has the parameters the pure-Python rules give."""
from __future__ import annotations

from pathlib import Path

from archc.pipeline import compile_spec

ROOT = Path(__file__).resolve().parents[2]


def test_compile_returns_module_with_pure_python_param_shapes():
    import archc
    module = archc.compile(ROOT / "specs" / "residual_cnn.toml")
    graph = compile_spec(ROOT / "specs" / "residual_cnn.toml").graph
    expected = {f"{n.id}.{k}": v for n in graph.nodes for k, v in n.params.items()}
    assert {k: tuple(p.shape) for k, p in module.named_parameters()} == expected
