"""Any id the spec language allows compiles: lowering owns the Python names (keywords, module attributes,
dunders, the names `act` sugar and escaping generate), and the module computes what validate reports."""
from __future__ import annotations

import builtins
import keyword
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from archc.compiled import BuildOptions
from archc.errors import ArchcError
from archc.ops.base import ID_PATTERN
from archc.pipeline import BUILD_PASSES, PASSES, compile_spec, compiled_from, lower, run

torch = pytest.importorskip("torch")
from torch import fx, nn  # noqa: E402


def _ids(names) -> list[str]:
    return sorted(n for n in set(names) if re.match(ID_PATTERN, n))


_GM = fx.GraphModule(nn.Module(), fx.Graph())
GROUPS = {
    "keywords": _ids(keyword.kwlist + keyword.softkwlist + ["self", "torch", "print", "getattr", "inf", "nan"]),
    "graph_module_attributes": _ids(dir(fx.GraphModule) + list(vars(_GM)) + ["archc_outputs"]),
    "module_attributes": _ids(dir(nn.Module) + list(vars(nn.Module()))),
    "dunders_and_builtins": _ids([f"__{n}__" for n in ("class", "init", "call", "dict", "x")] + dir(builtins)),
    # names lowering generates: act sugar today and before, escaped ids, fx's own suffixes
    "generated": ["fc1", "fc1_relu", "fc1_pre", "_fc1__relu", "id_training", "training", "id_id_training",
                  "__init_", "_training__relu", "fc1_1", "m_fc1", "linear_0", "x_", "x__relu"],
}


def _chain(ids: list[str]) -> dict:
    """A spec: one linear per id (every other one with act sugar), each reading the previous layer."""
    layers = [{"id": i, "op": "linear", "out_features": 3 + k % 2} | ({"act": "relu"} if k % 2 == 0 else {})
              for k, i in enumerate(ids)]
    return {"archc": 1, "model": {"name": "names"}, "inputs": {"x": {"shape": [4]}}, "layers": layers}


def _inputs(names: list[str]) -> dict:
    """A spec whose inputs carry adversarial names, all summed."""
    return {"archc": 1, "model": {"name": "class"}, "inputs": {n: {"shape": [4]} for n in names},
            "layers": [{"op": "add", "from": names, "id": "s"}, {"op": "linear", "out_features": 2}]}


def _blocks(ids: list[str]) -> dict:
    """A spec using adversarial ids inside a repeated block and as the block instances' ids."""
    inner = [{"id": i, "op": "linear", "out_features": 4, "act": "relu"} for i in ids[:20]]
    uses = [{"use": "b", "id": i, "repeat": 2} for i in ids[:3]]
    return {"archc": 1, "model": {"name": "None"}, "inputs": {"x": {"shape": [4]}},
            "blocks": {"b": {"layers": inner}}, "layers": uses}


def _build_and_check(spec: dict, tmp_path) -> None:
    """validate passes => lower, run, export with the ONNX Runtime parity check; every submodule runs once."""
    graph = compile_spec(spec).graph
    c = run(compiled_from(spec, options=BuildOptions(output=tmp_path / "m.onnx")), BUILD_PASSES)
    module = c.module
    assert sum(p.numel() for p in module.parameters()) == graph.total_params
    calls = [n.target for n in module.graph.nodes if n.op == "call_module"]
    assert len(calls) == len(set(calls)) == len(graph.nodes) + sum(n.act is not None for n in graph.nodes)
    leaves = {name for name, m in module.named_modules() if not list(m.children())}
    assert leaves == set(calls)
    assert c.report is not None and c.report.checks


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_any_id_builds_and_matches_validate(group, tmp_path):
    _build_and_check(_chain(GROUPS[group]), tmp_path)


@pytest.mark.parametrize("group", ["keywords", "generated"])
def test_any_input_name_builds(group, tmp_path):
    _build_and_check(_inputs(GROUPS[group]), tmp_path)


@pytest.mark.parametrize("group", ["keywords", "module_attributes", "generated"])
def test_any_id_builds_inside_blocks(group, tmp_path):
    _build_and_check(_blocks(GROUPS[group]), tmp_path)


def test_act_sugar_collision_applies_both_layers_and_the_relu(tmp_path):
    """fc1 (act relu) then fc1_relu: the module is linear, relu, linear (it once applied fc1_relu twice)."""
    spec = _chain(["fc1", "fc1_relu"])
    c = run(compiled_from(spec, options=BuildOptions(output=tmp_path / "m.onnx")), BUILD_PASSES)
    x = torch.randn(5, 4)
    mods = dict(c.module.named_modules())
    fc1, fc2 = mods["fc1"], mods["fc1_relu"]
    torch.testing.assert_close(c.module(x), fc2(torch.relu(fc1(x))))


def test_user_ids_stay_visible_in_code_and_onnx(tmp_path):
    import onnx
    spec = _chain(["fc1", "training", "lambda"])
    c = run(compiled_from(spec, options=BuildOptions(output=tmp_path / "m.onnx")), BUILD_PASSES)
    code = c.module.code
    assert "fc1" in code and "training" in code and "id_lambda" in code
    names = [n.name for n in onnx.load(tmp_path / "m.onnx").graph.node]
    # ONNX node names are the spec ids themselves (`fc1`, or `fc1/Gemm` when a layer exports as several nodes),
    # the escaped Python name (`id_lambda`) included: the emitter names nodes by spec id (export.annotate maps
    # each module back to its id in the traced fallback)
    assert any(n.split("/")[0] == "fc1" for n in names) and any(n.split("/")[0] == "training" for n in names)
    assert any(n.split("/")[0] == "lambda" for n in names)


def test_generated_names_avoid_written_ids():
    """An unnamed layer's generated name ('linear_0') yields to a later layer's written id."""
    spec = _chain(["a"]) | {"layers": [{"op": "linear", "out_features": 3}, {"id": "linear_0", "op": "relu"}]}
    graph = compile_spec(spec).graph
    assert [n.id for n in graph.nodes] == ["linear_0_", "linear_0"]


@pytest.mark.parametrize("where, spec", [
    ("layers[1] (x).id", _chain(["a", "x"])),
    ("blocks.b.layers[0] (x).id in layers[0] (u)",
     {**_blocks(["a"]), "blocks": {"b": {"layers": [{"id": "x", "op": "linear", "out_features": 4}]}},
      "layers": [{"use": "b", "id": "u"}]}),
])
def test_id_equal_to_an_input_name_is_a_located_error(where, spec):
    with pytest.raises(ArchcError) as e:
        compile_spec(spec)
    assert "is already the name of" in str(e.value) and where in str(e.value)


def test_escaped_and_activation_names_never_hit_a_reserved_name():
    """The injectivity argument in lower.names rests on these: no reserved name looks escaped or like an act."""
    from archc.lower import names
    from archc.ops import activation_names
    assert not any(r.startswith(names.ESCAPE) for r in names.reserved())
    assert not any(r.endswith(f"__{a}") for r in names.reserved() for a in activation_names())
    assert all("__" not in a and not a.startswith("_") for a in activation_names())


_ADVERSARIAL = sorted({n for g in GROUPS.values() for n in g})


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(ids=st.lists(st.one_of(st.sampled_from(_ADVERSARIAL), st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z"),
                              st.sampled_from(_ADVERSARIAL).map(lambda n: n + "_relu")), min_size=1, max_size=8),
       acts=st.lists(st.sampled_from([None, "relu", "gelu", "log_softmax", "softmax"]), min_size=8, max_size=8),
       input_name=st.sampled_from(["x", "self", "lambda", "training", "forward", "fc1_relu"]))
def test_fuzzed_ids_that_validate_lower_and_run(ids, acts, input_name):
    """Validate passes => the module runs, calls each submodule once and has validate's parameter count;
    validate fails only for a repeated id or an id equal to the input's name."""
    layers = [{"id": i, "op": "linear", "out_features": 3} | ({"act": a} if a else {}) for i, a in zip(ids, acts)]
    spec = {"archc": 1, "model": {"name": "fuzz"}, "inputs": {input_name: {"shape": [4]}}, "layers": layers}
    if len(set(ids)) < len(ids) or input_name in ids:
        with pytest.raises(ArchcError):
            compile_spec(spec)
        return
    c = run(compiled_from(spec), PASSES + [("lower", lower)])
    graph, module = c.graph, c.module
    assert sum(p.numel() for p in module.parameters()) == graph.total_params
    calls = [n.target for n in module.graph.nodes if n.op == "call_module"]
    assert len(calls) == len(set(calls)) == len(graph.nodes) + sum(n.act is not None for n in graph.nodes)
    assert module(torch.randn(2, 4)).shape == (2, 3)
