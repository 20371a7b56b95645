"""Every number a spec carries is finite where a finite number is meant: each float attribute of every registered
op, and each section's numbers, refuse nan and inf (TOML's literals and JSON's NaN/Infinity) with a located message,
and an op's numbers fit float32 (they become constants in the graph)."""
from __future__ import annotations

import json
import math

import pytest

import archc.ops  # noqa: F401 (fills the registry)
from archc.errors import ArchcError
from archc.language.load import load_text
from archc.ops.base import REGISTRY
from archc.pipeline import compile_spec


def _float_attributes() -> list[tuple[str, str]]:
    return [(name, attr) for name, cls in sorted(REGISTRY.items()) for attr, f in cls.attribute_fields().items()
            if "float" in str(f.annotation)]


def _lines(raw: dict) -> list[str]:
    with pytest.raises(ArchcError) as e:
        compile_spec(raw, name="s.json")
    return [p.line() for p in e.value.problems()]


def test_the_walk_finds_the_float_attributes():
    found = set(_float_attributes())
    assert {("clamp", "min"), ("pad", "value"), ("dropout", "p"), ("layernorm", "eps")} <= found
    assert len({name for name, _ in found}) >= 15


@pytest.mark.parametrize("name,attr", _float_attributes())
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_attribute_of_every_op_refuses_nan_and_inf(name, attr, value):
    example = REGISTRY[name].examples[0]
    raw = example.spec(name, "m", "regression")
    index = len(raw["layers"]) - 1
    raw["layers"][index][attr] = value
    assert f"s.json: layers[{index}] (node).{attr}: expected a finite number, received {value}" in _lines(raw)


@pytest.mark.parametrize("name,attr", _float_attributes())
def test_every_float_attribute_fits_float32(name, attr):
    example = REGISTRY[name].examples[0]
    raw = example.spec(name, "m", "regression")
    index = len(raw["layers"]) - 1
    raw["layers"][index][attr] = -1e39
    lines = _lines(raw)
    assert any(line.startswith(f"s.json: layers[{index}] (node).{attr}: expected ") and line.endswith("-1e+39")
               for line in lines), lines


SPEC = """archc = 1
[model]
name = "m"
[inputs.x]
shape = [4]
"""


@pytest.mark.parametrize("where,text", [
    ("params.v", "[params]\nv = nan\n"),
    ("blocks.b.params.w", '[blocks.b]\nparams = { w = inf }\nlayers = [{ op = "relu" }]\n'),
    ("train.optimizer.lr", "[train]\noptimizer = { lr = nan }\n"),
    ("train.optimizer.weight_decay", "[train]\noptimizer = { weight_decay = inf }\n"),
    ("train.label_smoothing", "[train]\nlabel_smoothing = nan\n"),
    ("train.grad_clip", "[train]\ngrad_clip = inf\n"),
    ("train.schedule.warmup_epochs", '[train]\nschedule = { name = "cosine", warmup_epochs = inf }\n'),
    ("data.val_fraction", '[data]\nsource = "sklearn:iris"\nval_fraction = nan\n'),
])
def test_sections_refuse_nan_and_inf(where, text):
    raw = load_text(SPEC + text + '[[layers]]\nop = "linear"\nout_features = 2\n', "toml", "s.toml")
    line = _lines(raw)[0]
    assert line.startswith(f"s.json: {where}: expected a finite number, received "), line


def test_json_nan_and_infinity_and_use_with_values():
    block = {"params": {"s": 0.5}, "layers": [{"op": "leaky_relu", "negative_slope": "$s"}]}
    text = json.dumps({"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [4]}}, "blocks": {"b": block},
                       "layers": [{"use": "b", "with": {"s": float("-inf")}},
                                  {"id": "c", "op": "clamp", "max": float("nan")}]})
    assert "-Infinity" in text and "NaN" in text  # Python's json writes (and reads) both
    lines = _lines(load_text(text, "json", "s.json"))
    assert "s.json: layers[0].with.s: expected a finite number, received -inf" in lines


def test_a_tabular_fill_refuses_nan():
    text = SPEC.replace("shape = [4]", 'columns = { a = { type = "numeric", missing = "constant", fill = nan } }')
    line = _lines(load_text(text + '[[layers]]\nop = "linear"\nout_features = 2\n', "toml", "s.toml"))[0]
    assert line == "s.json: inputs.x.columns.a.fill: expected a finite number, received nan"


def test_an_expression_that_overflows_names_itself():
    raw = load_text(SPEC + '[[layers]]\nid = "p"\nop = "pad"\npad = [1, 1]\nvalue = "${1e308 * 10}"\n', "toml", "s")
    assert _lines(raw)[0].startswith("s.json: layers[0] (p).value: expected a value of at most 1e+15 from "
                                     "'${1e308 * 10}', received")


@pytest.mark.parametrize("where,text", [("train.seed", "[train]\nseed = -1\n"),
                                        ("data.split_seed", '[data]\nsource = "sklearn:iris"\nsplit_seed = -3\n')])
def test_seeds_are_what_numpy_and_torch_take(where, text):
    raw = load_text(SPEC + text + '[[layers]]\nop = "linear"\nout_features = 2\n', "toml", "s.toml")
    assert _lines(raw)[0] == f"s.json: {where}: expected a value >= 0, received {text.split('= ')[-1].strip()}"
