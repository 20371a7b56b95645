"""Per-node failures are re-raised at the node's spec location (as torch.fx's ShapeProp does): a user error keeps
its kind, a crash inside an op's own code becomes an InternalError naming the layer and the op."""
from __future__ import annotations

import pytest

from archc.errors import ArchcError, ShapeError
from archc.graph.located import InternalError
from archc.ops import REGISTRY
from archc.pipeline import compile_spec

SPEC = {"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [4]}}, "task": {"kind": "regression"},
        "blocks": {"pair": {"layers": [{"id": "a", "op": "linear", "out_features": 4},
                                       {"id": "b", "op": "relu"}]}},
        "layers": [{"id": "fc1", "op": "linear", "out_features": 4},
                   {"id": "stage", "use": "pair", "repeat": 2},
                   {"id": "fc2", "op": "relu"},
                   {"id": "head", "op": "linear", "out_features": 2}]}


def boom(*args, **kwargs):
    raise ZeroDivisionError("boom")


@pytest.mark.parametrize("method", ["infer", "param_shapes", "flops"])
def test_a_crash_in_an_op_rule_names_the_layer_and_the_op(monkeypatch, method):
    monkeypatch.setattr(REGISTRY["relu"], method, boom)
    with pytest.raises(InternalError) as info:
        compile_spec(SPEC, name="m.toml")
    e = info.value
    # the first relu in document order: inside the block's first repeat
    assert e.where == "blocks.pair.layers[1] (b) in layers[1] (stage) repeat 0" and e.op == "relu"
    assert e.file == "m.toml" and e.pass_name == "infer"
    assert isinstance(e.error, ZeroDivisionError) and e.__cause__ is e.error
    assert str(e) == ("m.toml: blocks.pair.layers[1] (b) in layers[1] (stage) repeat 0: op 'relu' raised "
                      "ZeroDivisionError: boom (in pass infer)")


def test_a_crash_at_a_top_level_layer(monkeypatch):
    original = REGISTRY["linear"].infer

    def fail_on_head(self, ins):
        if self.out_features == 2:
            raise ValueError("bad rule")
        return original(self, ins)

    monkeypatch.setattr(REGISTRY["linear"], "infer", fail_on_head)
    with pytest.raises(InternalError, match=r"^m.toml: layers\[3\] \(head\): op 'linear' raised ValueError: bad rule"):
        compile_spec(SPEC, name="m.toml")


def test_a_user_error_in_a_rule_keeps_its_kind_and_gains_the_location(monkeypatch):
    def refuse(self, ins):
        raise ShapeError("expected something else, received this")

    monkeypatch.setattr(REGISTRY["relu"], "infer", refuse)
    with pytest.raises(ArchcError) as info:
        compile_spec({**SPEC, "blocks": {"pair": {"layers": [{"id": "a", "op": "linear", "out_features": 4}]}}},
                     name="m.toml")
    e = info.value
    assert isinstance(e, ShapeError) and e.where == "layers[2] (fc2)"
    assert e.line().startswith("m.toml: layers[2] (fc2): relu: expected something else, received this")


def test_a_crash_while_expanding_names_the_layer(monkeypatch):
    """An op's attribute validation that crashes (not a ValueError pydantic would report) is located too."""
    def crash(cls, value, *args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(REGISTRY["relu"], "model_validate", classmethod(crash))
    with pytest.raises(InternalError) as info:
        compile_spec(SPEC, name="m.toml")
    assert info.value.where == "blocks.pair.layers[1] (b) in layers[1] (stage) repeat 0"
    assert info.value.op == "relu" and info.value.pass_name == "expand"
