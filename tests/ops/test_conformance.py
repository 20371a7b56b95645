"""One conformance test over every registered op: shape rule and parameter shapes vs torch, and
ONNX Runtime vs torch values at two batch sizes (through the real compile -> lower -> export path)."""
from __future__ import annotations

import json

import pytest
import torch

from archc.export import export
from archc.lower import lower
from archc.ops import REGISTRY
from archc.ops.base import TensorType
from archc.pipeline import compile_spec

CASES = [(name, i, ex) for name, cls in sorted(REGISTRY.items()) for i, ex in enumerate(cls.examples)]


def example_spec(name: str, ex) -> dict:
    inputs = {f"x{k}": {"shape": list(shape), "dtype": ex.dtype} for k, shape in enumerate(ex.inputs)}
    layer = {"op": name, "id": "node", "from": list(inputs), **ex.attrs}
    return {"archc": 1, "model": {"name": f"conformance-{name}"}, "inputs": inputs, "axes": ex.sizes,
            "task": {"kind": "regression"}, "layers": [layer]}


def test_every_op_has_examples_and_doc():
    for name, cls in REGISTRY.items():
        assert cls.examples, f"op {name} has no examples"
        assert cls.doc(), f"op {name} has no docstring"
        for key, field in cls.attribute_fields().items():
            assert field.description, f"op {name}: attribute {key} has no description"


@pytest.mark.parametrize("name,i,ex", CASES, ids=[f"{n}-{i}" for n, i, _ in CASES])
def test_op_conformance(name, i, ex, tmp_path):
    cls = REGISTRY[name]
    op = cls.model_validate({"op": name, **ex.attrs})
    ins = [TensorType(("batch", *shape), ex.dtype) for shape in ex.inputs]
    out = op.infer(ins)
    # parameters: torch's module has exactly the shapes the pure-Python rule gives
    torch.manual_seed(0)
    module = op.to_torch(ins).eval()
    assert {k: tuple(p.shape) for k, p in module.named_parameters()} == op.param_shapes(ins)
    assert op.num_params(ins) == sum(p.numel() for p in module.parameters())
    # shapes: torch's output shape equals the rule's at two batch sizes
    for batch in (2, 5):
        xs = [torch.randn(batch, *shape) for shape in ex.inputs]
        with torch.no_grad():
            y = module(*xs)
        assert tuple(y.shape) == (batch, *out.features), f"{name}: rule {out.show()} vs torch {tuple(y.shape)}"
        assert str(y.dtype).removeprefix("torch.") == out.dtype
    # values: ONNX Runtime matches torch at batch sizes 1 and 3 (export raises above tolerance)
    result = compile_spec(example_spec(name, ex))
    report = export(lower(result.graph), result.graph, result.spec, result.raw, result.sha256,
                    tmp_path / "op.onnx")
    assert {c["batch"] for c in report.checks} == {1, 3}
    assert report.max_abs_diff <= report.tolerance
    (tmp_path / "diff.json").write_text(json.dumps({"op": name, "family": cls.family, "diff": report.max_abs_diff}))
