"""Mutated specs either compile or raise ArchcError whose every problem names a spec location."""
from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from archc.errors import ArchcError
from archc.pipeline import compile_spec

# ---- valid starting points ---------------------------------------------------------------------
DIGITS = {
    "archc": 1,
    "model": {"name": "digit-classifier"},
    "inputs": {"image": {"shape": [1, 28, 28], "dtype": "float32"}},
    "task": {"kind": "classification", "labels": [str(i) for i in range(10)]},
    "layers": [
        {"op": "flatten"},
        {"id": "fc1", "op": "linear", "out_features": 256, "act": "relu"},
        {"id": "fc2", "op": "linear", "out_features": 128, "act": "relu"},
        {"id": "logits", "op": "linear", "out_features": 10},
    ],
    "train": {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 1e-3}, "schedule": "cosine"},
}
CNN = {
    "archc": 1,
    "model": {"name": "cnn"},
    "inputs": {"image": {"shape": [3, 16, 16]}},
    "task": {"kind": "classification", "labels": ["a", "b", "c"]},
    "layers": [
        {"id": "c1", "op": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"id": "bn1", "op": "batchnorm", "act": "relu"},
        {"id": "p1", "op": "max_pool2d", "kernel_size": 2},
        {"id": "c2", "op": "conv2d", "out_channels": 16, "kernel_size": [3, 3], "stride": 1, "padding": "same"},
        {"id": "gap", "op": "global_avg_pool"},
        {"id": "drop", "op": "dropout", "p": 0.2},
        {"id": "head", "op": "linear", "out_features": 3},
    ],
}
RESIDUAL = {
    "archc": 1,
    "model": {"name": "resnet"},
    "inputs": {"x": {"shape": [4, 8, 8]}},
    "params": {"width": 8},
    "blocks": {
        "res": {
            "params": {"ch": 8},
            "layers": [
                {"id": "a", "op": "conv2d", "out_channels": "$ch", "kernel_size": 3, "padding": 1, "act": "relu"},
                {"id": "b", "op": "conv2d", "out_channels": "${ch * 1}", "kernel_size": 3, "padding": "same"},
                {"id": "sum", "op": "add", "from": ["x", "b"]},
            ],
        },
    },
    "layers": [
        {"id": "stem", "op": "conv2d", "out_channels": "$width", "kernel_size": 1},
        {"id": "stage", "use": "res", "repeat": 2, "with": {"ch": "$width"}},
        {"op": "global_avg_pool"},
        {"id": "out", "op": "linear", "out_features": 2},
    ],
    "task": {"kind": "classification", "labels": ["no", "yes"]},
}
TWO_INPUTS = {
    "archc": 1,
    "model": {"name": "two"},
    "inputs": {"a": {"shape": [4]}, "b": {"shape": [6]}},
    "outputs": ["y"],
    "task": {"kind": "regression"},
    "layers": [
        {"id": "fa", "op": "linear", "out_features": 5, "from": "a", "act": "tanh"},
        {"id": "fb", "op": "linear", "out_features": 3, "from": "b"},
        {"id": "cat", "op": "concat", "from": ["fa", "fb"], "dim": -1},
        {"id": "norm", "op": "layernorm"},
        {"id": "y", "op": "linear", "out_features": 1},
    ],
}
MISC = {  # the other ops, and a symbolic axis
    "archc": 1,
    "model": {"name": "misc"},
    "inputs": {"sig": {"shape": [2, 12]}, "tok": {"shape": ["n", 8]}},
    "axes": {"n": 10},
    "outputs": ["o", "e"],
    "layers": [
        {"id": "c", "op": "conv1d", "out_channels": 4, "kernel_size": 3, "padding": "same", "dilation": 2,
         "groups": 2, "from": "sig"},
        {"id": "p", "op": "avg_pool1d", "kernel_size": 2},
        {"id": "t", "op": "permute", "dims": [0, 2, 1]},
        {"id": "ln", "op": "layernorm", "dims": 2},
        {"id": "g", "op": "leaky_relu", "negative_slope": 0.1},
        {"id": "m", "op": "mul", "from": ["t", "g"]},
        {"id": "r", "op": "reshape", "shape": [-1, 4]},
        {"id": "f", "op": "flatten", "start_dim": 1, "end_dim": -1},
        {"id": "o", "op": "linear", "out_features": 5, "act": "log_softmax"},
        {"id": "e", "op": "linear", "out_features": 4, "from": "tok", "act": "gelu"},
        {"id": "s", "op": "softmax", "dim": 1},
        {"id": "mp", "op": "max_pool1d", "kernel_size": 2, "stride": 1, "padding": 1, "from": "c"},
    ],
}
BASES = {"digits": DIGITS, "cnn": CNN, "residual": RESIDUAL, "two_inputs": TWO_INPUTS, "misc": MISC}

# ---- garbage ------------------------------------------------------------------------------------
NAMES = st.sampled_from(["x", "a", "fc1", "fc2", "logits", "c1", "res", "stage", "sum", "image", "nope",
                         "1bad", "", "with space", "batch", "$width", "${ch}"])
REFS = st.sampled_from(["$width", "$widht", "$ch", "${ch * 2}", "${ch +}", "${1 / 0}", "${2 ** 99}",
                        "${min()}", "${__import__('os')}", "${ch // 0}", "${-ch}", "${ch * 1.5}", "$repeat", "$i",
                        "${1e999}", "${1e15 ** 64}", "${(-8) ** 0.5}", "${" + "-" * 5000 + "1}",
                        "${" + "+".join(["1"] * 3000) + "}", "${" + "(" * 150 + "1" + ")" * 150 + "}",
                        "${max(ch, 3)}", "${width // 2}", "${i + 1}"])
SCALARS = st.one_of(
    st.integers(-3, 40), st.sampled_from([0, -1, 10**7, 2**31, 2**63, 10**30, -(10**30), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.text(max_size=8), NAMES, REFS,
    st.just(()), st.just(b"x"), st.just({1: 2}), st.just({3}))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=10)
OPS = st.sampled_from(["linear", "lineer", "conv2d", "conv1d", "max_pool2d", "avg_pool1d", "batchnorm", "layernorm",
                       "flatten", "reshape", "permute", "dropout", "add", "mul", "concat", "relu", "softmax",
                       "global_avg_pool", "gelu", "nonsense", "", "Linear"])
ATTRS = st.sampled_from(["out_features", "out_feature", "kernel_size", "stride", "padding", "dilation", "groups",
                         "p", "dim", "dims", "shape", "start_dim", "end_dim", "bias", "eps", "momentum", "act",
                         "from", "id", "use", "with", "repeat", "op", "out_channels", "__class__", "weight"])


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a nested dict/list (the root excluded), down to a depth of 12."""
    out: list[tuple] = []
    if len(prefix) >= 12:
        return out
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(paths(v, prefix + (k,)))
    return out


def get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def layer_lists(spec: dict) -> list[list]:
    """The top-level layers and every block's layers that are still lists."""
    out = [spec["layers"]] if isinstance(spec.get("layers"), list) else []
    blocks = spec.get("blocks")
    if isinstance(blocks, dict):
        out += [b["layers"] for b in blocks.values() if isinstance(b, dict) and isinstance(b.get("layers"), list)]
    return [ls for ls in out if ls]


LAYER_KINDS = ["op", "attr", "id", "from", "cycle", "from_list", "ref", "use", "swap", "dup", "delete", "tweak",
               "tweak"]
SMALL = st.one_of(st.integers(-4, 40), st.lists(st.integers(-2, 6), max_size=5), st.sampled_from(["same", "valid"]))
KINDS = LAYER_KINDS + ["drop", "retype", "shape", "nest"]


def mutate(spec: dict, data: st.DataObject, kind: str | None = None) -> None:
    """Apply one random mutation (of `kind`, or any) in place."""
    kind = kind or data.draw(st.sampled_from(KINDS))
    lists = layer_lists(spec)
    layers = [l for ls in lists for l in ls if isinstance(l, dict)]
    if kind in ("drop", "retype", "nest"):
        where = data.draw(st.sampled_from(paths(spec) or [("archc",)]))
        parent = get(spec, where[:-1]) if len(where) > 1 else spec
        if kind == "drop":
            if isinstance(parent, dict):
                parent.pop(where[-1], None)
            elif isinstance(parent, list):
                del parent[where[-1]]
        elif kind == "retype":
            parent[where[-1]] = data.draw(VALUES)
        else:
            depth = data.draw(st.sampled_from([5, 40, 200, 2000]))
            garbage: Any = data.draw(SCALARS)
            for j in range(depth):
                garbage = [garbage] if j % 2 else {"k": garbage}
            parent[where[-1]] = garbage
        return
    if kind == "shape":
        inputs = spec.get("inputs")
        if isinstance(inputs, dict) and inputs:
            name = data.draw(st.sampled_from(sorted(inputs, key=str)))
            dims = st.one_of(st.integers(-2, 5), st.sampled_from([10**6, 2**40, 2**62]), NAMES, st.floats())
            inputs[name] = {"shape": data.draw(st.lists(dims, max_size=7))}
        return
    if kind in ("swap", "dup", "delete"):
        if lists:
            ls = data.draw(st.sampled_from(lists))
            i, j = data.draw(st.integers(0, len(ls) - 1)), data.draw(st.integers(0, len(ls) - 1))
            if kind == "swap":
                ls[i], ls[j] = ls[j], ls[i]
            elif kind == "dup":
                ls.insert(j, copy.copy(ls[i]))  # shallow: a layer may hold garbage nested too deep to deepcopy
            else:
                del ls[i]
        return
    if not layers:
        return
    layer = data.draw(st.sampled_from(layers))
    ids = [l.get("id") for l in layers if isinstance(l.get("id"), str)]
    if kind == "op":
        layer["op"] = data.draw(OPS)
    elif kind == "tweak":  # plausible values in plausible places: these reach the shape rules
        layer[data.draw(ATTRS.filter(lambda a: a not in ("from", "id", "use", "with", "op")))] = data.draw(SMALL)
    elif kind == "attr":
        layer[data.draw(ATTRS)] = data.draw(VALUES)
    elif kind == "id":
        layer["id"] = data.draw(st.one_of(NAMES, st.sampled_from(ids or ["x"]), VALUES))
    elif kind == "from":
        layer["from"] = data.draw(st.one_of(NAMES, st.sampled_from(ids or ["x"])))
    elif kind == "cycle":
        layer["from"] = data.draw(st.sampled_from(ids or ["x"]))
        layer.setdefault("id", data.draw(st.sampled_from(ids or ["x"])))
    elif kind == "from_list":
        layer["from"] = data.draw(st.lists(st.one_of(NAMES, st.sampled_from(ids or ["x"]), SCALARS), max_size=4))
    elif kind == "ref":
        layer[data.draw(ATTRS)] = data.draw(REFS)
    elif kind == "use":
        layer.pop("op", None)
        layer["use"] = data.draw(st.sampled_from(["res", "rse", "stage", "x"]))
        if data.draw(st.booleans()):
            layer["repeat"] = data.draw(st.sampled_from([0, 1, 3, 10**5, -1, "2"]))
        if data.draw(st.booleans()):
            layer["with"] = data.draw(st.dictionaries(st.sampled_from(["ch", "chh", "width"]), VALUES, max_size=2))


def check_outcome(spec: dict) -> Any:
    """compile_spec succeeds, or every reported problem is located; any other exception fails the test."""
    try:
        return compile_spec(spec)
    except ArchcError as e:
        problems = e.problems()
        assert problems
        for p in problems:
            assert isinstance(p, ArchcError)
            assert p.where, f"problem without a spec location: {p.line()!r}"
            assert p.message and "\n" not in p.line(), p.line()
        return None


MUTATED = st.data()
FUZZ = settings(max_examples=1500, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def test_bases_compile() -> None:
    for name, spec in BASES.items():
        assert compile_spec(copy.deepcopy(spec)).graph is not None, name


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), n=st.integers(1, 3), data=MUTATED)
def test_mutated_specs_fail_cleanly(base: str, n: int, data: st.DataObject) -> None:
    spec = copy.deepcopy(BASES[base])
    for _ in range(n):
        mutate(spec, data)
    check_outcome(spec)


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), data=MUTATED)
def test_mutated_layers_fail_cleanly(base: str, data: st.DataObject) -> None:
    """Mutations aimed at layers only: more of them get past the check pass into expand and infer."""
    spec = copy.deepcopy(BASES[base])
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(spec, data, data.draw(st.sampled_from(LAYER_KINDS)))
    result = check_outcome(spec)
    if result is not None:
        _consistent(result.graph)


def _consistent(graph: Any) -> None:
    """Totals of a compiled graph agree with its nodes."""
    assert graph.total_params == sum(n.num_params for n in graph.nodes)
    for node in graph.nodes:
        assert node.out is not None
        assert node.num_params == sum(math.prod(s) for s in node.params.values())
        assert all(isinstance(d, int) and d >= 1 for s in node.params.values() for d in s), node.params
        assert all(isinstance(d, str) or d >= 1 for d in node.out.shape), node.out
        assert node.flops >= 0
    assert set(graph.outputs.values()) <= {n.id for n in graph.nodes} | set(graph.inputs)


@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(base=st.sampled_from(sorted(BASES)), data=MUTATED)
def test_successful_mutants_have_consistent_totals(base: str, data: st.DataObject) -> None:
    """Size-only mutations that mostly compile: totals equal the sum over nodes."""
    spec = copy.deepcopy(BASES[base])
    for layer in layer_lists(spec)[0]:
        for attr in ("out_features", "out_channels"):
            if attr in layer and isinstance(layer[attr], int):
                layer[attr] = data.draw(st.integers(1, 64))
        if "kernel_size" in layer:
            layer["kernel_size"] = data.draw(st.integers(1, 3))
    result = check_outcome(spec)
    if result is not None:
        _consistent(result.graph)


# ---- every registered op, random attributes, random inputs ---------------------------------------
def _op_names() -> list[str]:
    from archc.ops import REGISTRY
    return sorted(REGISTRY)


def _attr_names(op: str) -> list[str]:
    from archc.ops import REGISTRY
    return sorted(REGISTRY[op].attribute_fields())


DIMS = st.one_of(st.integers(1, 9), st.sampled_from(["n", "seq", 1, 2**40]))
ATTR_VALUES = st.one_of(st.integers(-3, 9), st.lists(st.integers(-2, 5), max_size=4), st.booleans(),
                        st.floats(-1, 2), st.sampled_from(["same", "valid", "tanh", "none", "state", 2**62]))


def _shape(base: tuple, data: st.DataObject) -> list:
    """An example's input shape, often bent: a size changed, an axis added or removed, a symbolic axis."""
    shape = list(base)
    for _ in range(data.draw(st.integers(0, 2))):
        how = data.draw(st.sampled_from(["set", "add", "drop"]))
        if how == "add" or not shape:
            shape.insert(data.draw(st.integers(0, len(shape))), data.draw(DIMS))
        elif how == "set":
            shape[data.draw(st.integers(0, len(shape) - 1))] = data.draw(DIMS)
        else:
            del shape[data.draw(st.integers(0, len(shape) - 1))]
    return shape


@FUZZ
@given(op=st.sampled_from(_op_names()), data=MUTATED)
def test_op_rules_fail_cleanly(op: str, data: st.DataObject) -> None:
    """Each op's shape rule, on bent attributes and inputs (from its own examples), gives a type or a clean error."""
    from archc.ops import REGISTRY, Example
    cls = REGISTRY[op]
    example = data.draw(st.sampled_from(cls.examples or (Example({}, ((4, 6),)),)))
    shapes = [_shape(s, data) for s in example.inputs]
    lo, hi = cls.arity
    if data.draw(st.integers(0, 9)) == 0:  # now and then, the wrong number of inputs
        shapes = shapes[:1] * data.draw(st.integers(1, 3))
    dtypes = example.dtype if isinstance(example.dtype, tuple) else (example.dtype,) * len(example.inputs)
    inputs = {f"in{k}": {"shape": s, "dtype": dtypes[k % len(dtypes)] if data.draw(st.integers(0, 5)) else
                         data.draw(st.sampled_from(["int64", "float32"]))} for k, s in enumerate(shapes)}
    layer: dict[str, Any] = {"id": "node", "op": op, **example.attrs,
                             "from": sorted(inputs) if len(inputs) > 1 else "in0"}
    attrs = _attr_names(op)
    for attr in data.draw(st.lists(st.sampled_from(attrs), max_size=2, unique=True)) if attrs else []:
        layer[attr] = data.draw(ATTR_VALUES)
    if data.draw(st.integers(0, 4)) == 0:
        layer["act"] = data.draw(st.sampled_from(["relu", "softmax", "log_softmax", "gelu"]))
    spec = {"archc": 1, "model": {"name": "op"}, "inputs": inputs, "axes": dict(example.sizes),
            "task": {"kind": "regression"}, "layers": [layer]}
    result = check_outcome(spec)
    if result is not None:
        _consistent(result.graph)
