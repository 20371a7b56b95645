"""Validate passes => build, run and export work, and the module is what validate reported.

Starting points: every spec in specs/, every op's conformance examples and a tabular spec (TABULAR). Each is
mutated (attributes, layer order, repeats, axes, input shapes or columns, wiring, activations); a mutant that
validates is lowered (the pipeline's torch pass), its parameter count compared with validate's, run on the
exporter's example inputs at the traced sizes and at the parity check's other sizes (every node's output shape and
dtype against validate's), and, for a subset (all of them in the long profile), exported to ONNX and checked
against ONNX Runtime; an exported tabular mutant is also wrapped to take a row, its columns fitted on numbers
around a large mean (a year, a mass, a timestamp), and checked against Table.encode; columns are renamed like the
spec's other names too. A mutant that does not validate must fail with located errors only.

Exports go through the default exporter, archc's emitter (archc.emit; BuildOptions.exporter), against the torch
module as the oracle; ARCHC_FUZZ_EXPORTER=torchscript fuzzes the traced fallback instead.

Profiles (PROFILES: mutants per starting point, one export in every so many):
- CI (default, `make test`): 25 per starting point, one in 10 exported;
- ARCHC_FUZZ=medium (`make fuzz FUZZ=medium`): 25 per starting point, every one that validates exported;
- ARCHC_FUZZ=long (`make fuzz`): 80 per starting point (>= 13,000 mutants), every one that validates exported.
ARCHC_FUZZ_STATS=FILE appends each test's tally (one JSON line) to FILE.
"""
from __future__ import annotations

import copy
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from archc.compiled import BuildOptions
from archc.errors import ArchcError
from archc.language.load import load_file
from archc.ops import REGISTRY, activation_names
from archc.pipeline import PASSES, compiled_from, export, lower, run
from archc.summary import rows as summary_rows

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.fuzz
from torch import fx  # noqa: E402

from archc.export.onnx import TRACE_BATCH, check_sizes, example_inputs  # noqa: E402
from archc.lower.names import act_path, module_path  # noqa: E402

# profile -> (mutants per starting point, export one in this many); ONNX export + ORT parity costs ~0.05-1 s
PROFILES = {"": (25, 10), "medium": (25, 1), "long": (80, 1)}
PROFILE = os.environ.get("ARCHC_FUZZ", "")
if PROFILE not in PROFILES:
    raise pytest.UsageError(f"ARCHC_FUZZ: expected {' or '.join(repr(p) for p in PROFILES if p)} (or unset), "
                            f"received {PROFILE!r}")
LONG = PROFILE == "long"                  # the unmutated starting points are exported too
PER_BASE, EXPORT_EVERY = PROFILES[PROFILE]  # 174 starting points: 13,920 mutants long, 4,350 medium and in CI
EXPORTER = os.environ.get("ARCHC_FUZZ_EXPORTER", BuildOptions().exporter)
ROOT = Path(__file__).resolve().parents[2]
MAX_PARAMS, MAX_FLOPS = 4_000_000, 1_000_000_000  # per example; bigger mutants (doubled widths) prove nothing more


# ---- starting points ------------------------------------------------------------------------------------------
def _example_spec(name: str, ex) -> dict:
    return ex.spec(name, f"fuzz-{name}", "regression")


# A tabular input declared by columns (one-hot, embedded, with an indicator): its width and its embedding front
# come from the columns, which the "input" mutation changes
TABULAR = {"archc": 1, "model": {"name": "fuzz-tabular"}, "task": {"kind": "classification"},
           "inputs": {"row": {"missing": "median", "columns": {
               "a": "numeric", "b": {"type": "categorical", "categories": ["x", "y", "z"]},
               "c": {"type": "categorical", "max_categories": 4, "encode": "embedding", "dim": 3, "indicator": True},
               "d": "boolean"}}},
           "layers": [{"id": "fc1", "op": "linear", "out_features": 8, "act": "relu"},
                      {"id": "out", "op": "linear", "out_features": 3}]}


def _bases() -> dict[str, dict]:
    specs = {f"specs/{p.name}": load_file(p) for p in sorted((ROOT / "specs").iterdir())
             if p.suffix in (".toml", ".json")}
    ops = {f"{name}-{i}": _example_spec(name, ex) for name, cls in sorted(REGISTRY.items())
           for i, ex in enumerate(cls.examples)}
    return specs | ops | {"tabular": TABULAR}


BASES = _bases()
MUTABLE = ("inputs", "axes", "params", "blocks", "layers", "outputs")  # not model, task, train, data
ACTS = sorted(activation_names())
DIM_KEYS = {"dim", "dims", "start_dim", "end_dim", "axis"}


def _walk(obj: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, value) of every location under obj."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    out = []
    for k, v in items:
        out.append((prefix + (k,), v))
        out.extend(_walk(v, prefix + (k,)))
    return out


def _pools() -> dict[str, list]:
    """Every value any starting point gives each layer attribute: plausible values to move between layers."""
    seen: dict[str, dict[str, Any]] = {}
    for spec in BASES.values():
        for layer in _layers(spec):
            for k, v in layer.items():
                if k not in ("id", "from", "op", "use", "with"):
                    seen.setdefault(k, {})[json.dumps(v, sort_keys=True)] = v
    return {k: [v[j] for j in sorted(v)] for k, v in seen.items()}


def _layer_lists(spec: dict) -> list[list]:
    out = [spec["layers"]] if isinstance(spec.get("layers"), list) else []
    out += [b["layers"] for b in (spec.get("blocks") or {}).values() if isinstance(b.get("layers"), list)]
    return [ls for ls in out if ls]


def _layers(spec: dict) -> list[dict]:
    return [layer for ls in _layer_lists(spec) for layer in ls if isinstance(layer, dict)]


POOLS = _pools()


# ---- mutations ------------------------------------------------------------------------------------------------
def _near(v: int, key: Any) -> list[int]:
    """Integers near v (the sizes a user would try); negative and zero ones for axis attributes."""
    out = {v - 1, v + 1, v * 2, max(1, v // 2), 1, 2, 3}
    if key in DIM_KEYS:
        out |= {-1, -2, 0, -v}
    return sorted(x for x in out if x != v and (x >= 1 or key in DIM_KEYS or key == "repeat"))


def _ints(spec: dict) -> list[tuple[tuple, int]]:
    return [(p, v) for top in MUTABLE if top in spec for p, v in _walk(spec[top], (top,))
            if isinstance(v, int) and not isinstance(v, bool)]


def _set(spec: dict, path: tuple, value: Any) -> None:
    obj = spec
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def _ids(spec: dict) -> list[str]:
    return sorted(set(spec.get("inputs") or {}) | {l["id"] for l in _layers(spec) if isinstance(l.get("id"), str)})


def mutate(spec: dict, data: st.DataObject) -> str:
    """One plausible mutation, in place; returns its kind."""
    kind = data.draw(st.sampled_from(KINDS))
    layers, lists = _layers(spec), _layer_lists(spec)
    if kind == "int":
        ints = _ints(spec)
        if ints:
            path, v = data.draw(st.sampled_from(ints))
            _set(spec, path, data.draw(st.sampled_from(_near(v, path[-1]))))
    elif kind == "input" and any("columns" in i for i in spec["inputs"].values()):
        name = next(n for n, i in spec["inputs"].items() if "columns" in i)
        _mutate_columns(spec["inputs"][name]["columns"], data, [*_ids(spec), f"{name}.columns"])
    elif kind == "input":
        name = data.draw(st.sampled_from(sorted(spec["inputs"])))
        shape = list(spec["inputs"][name].get("shape", []))
        axes = sorted(spec.get("axes") or {}) or ["n"]
        how = data.draw(st.sampled_from(["add", "drop", "sym"] if shape else ["add"]))
        if how == "add":
            shape.insert(data.draw(st.integers(0, len(shape))), data.draw(st.sampled_from([1, 2, 3, 5, *axes])))
        elif how == "drop":
            del shape[data.draw(st.integers(0, len(shape) - 1))]
        else:
            shape[data.draw(st.integers(0, len(shape) - 1))] = data.draw(st.sampled_from(axes))
        spec["inputs"][name]["shape"] = shape
        if data.draw(st.integers(0, 5)) == 0:
            spec["inputs"][name]["dtype"] = data.draw(st.sampled_from(["float32", "int64"]))
    elif kind in ("swap", "delete", "dup") and lists:
        ls = data.draw(st.sampled_from(lists))
        i = data.draw(st.integers(0, len(ls) - 1))
        if kind == "swap":
            anywhere = data.draw(st.integers(0, len(ls) - 1))
            j = data.draw(st.sampled_from([max(0, i - 1), min(len(ls) - 1, i + 1), anywhere]))  # mostly neighbours
            ls[i], ls[j] = ls[j], ls[i]
        elif kind == "delete" and len(ls) > 1:
            del ls[i]
        elif kind == "dup":
            twin = copy.deepcopy(ls[i])
            if "id" in twin:
                twin["id"] = f"{twin['id']}_again"
            ls.insert(i + 1, twin)
    elif layers:
        layer = data.draw(st.sampled_from(layers))
        _mutate_layer(spec, layer, kind, data)
    return kind


def _mutate_columns(columns: dict, data: st.DataObject, names: list[str]) -> None:
    """One column changed: its encoding, its indicator, its type, gone, or renamed like a name the spec or the
    exported model that takes a row uses (`names`: inputs, layer ids, the embedding front; its preprocessing's)."""
    name = data.draw(st.sampled_from(sorted(columns)))
    col = columns[name] if isinstance(columns[name], dict) else {"type": columns[name]}
    how = data.draw(st.sampled_from(["encode", "indicator", "type", "drop", "rename"]))
    if how == "rename":
        new = data.draw(st.sampled_from([*names, "archc_row/encoded", f"archc_row/{name}/value", "batch"]))
        if new not in columns:
            columns[new] = columns.pop(name)
        return
    if how == "encode":
        embed = col.get("encode") != "embedding"
        col.update({"encode": "embedding", "dim": data.draw(st.integers(1, 4))} if embed else {"encode": "onehot"})
        if not embed:
            col.pop("dim", None)
    elif how == "indicator":
        col["indicator"] = not col.get("indicator", False)
    elif how == "type":
        col["type"] = data.draw(st.sampled_from(["numeric", "categorical", "boolean"]))
    elif len(columns) > 1:
        del columns[name]
        return
    columns[name] = col


def _mutate_layer(spec: dict, layer: dict, kind: str, data: st.DataObject) -> None:
    cls = REGISTRY.get(layer.get("op", ""))
    attrs = sorted(cls.attribute_fields()) if cls else []
    if kind == "attr" and attrs:  # a value another layer uses for the same attribute
        key = data.draw(st.sampled_from(attrs))
        if POOLS.get(key):
            layer[key] = copy.deepcopy(data.draw(st.sampled_from(POOLS[key])))
    elif kind == "unset" and attrs:  # back to the default, or a required attribute missing
        layer.pop(data.draw(st.sampled_from(attrs)), None)
    elif kind == "op" and cls:  # another op that takes the attributes this layer sets
        keys = {k for k in layer if k not in ("id", "from", "op", "act")}
        fits = sorted(n for n, c in REGISTRY.items() if keys <= set(c.attribute_fields()) and n != layer["op"])
        if fits:
            layer["op"] = data.draw(st.sampled_from(fits))
    elif kind == "act":
        layer["act"] = data.draw(st.sampled_from(ACTS))
        if data.draw(st.booleans()):
            layer.pop("act")
    elif kind == "from":
        ids = [i for i in _ids(spec) if i != layer.get("id")]
        if ids:
            many = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=3))
            layer["from"] = many[0] if len(many) == 1 else many
    elif kind == "repeat" and "use" in layer:
        layer["repeat"] = data.draw(st.integers(0, 3))


KINDS = ["int", "int", "int", "input", "swap", "delete", "dup", "attr", "attr", "unset", "op", "act", "from", "repeat"]


# ---- the verdict ----------------------------------------------------------------------------------------------
def size(d: Any, batch: int, sizes: dict[str, int]) -> int:
    """A dimension at this batch and these axis sizes; derived axes as ops name them: 'seq-1', 'seq[-3:]'."""
    if d == "batch":
        return batch
    if isinstance(d, int):
        return d
    if d in sizes:
        return sizes[d]
    if m := re.fullmatch(r"(.+)-(\d+)", d):
        return size(m[1], batch, sizes) - int(m[2])
    if m := re.fullmatch(r"(.+)\[(-?\d*):(-?\d*)\]", d):
        bounds = slice(*(int(b) if b else None for b in (m[2], m[3])))
        return len(range(size(m[1], batch, sizes))[bounds])
    raise KeyError(f"axis {d!r} has no size in {sizes}")


def left_out(graph, sizes: dict[str, int]) -> str | None:
    """Why these axis sizes are left out of the verdict, or None.

    'data-sized' -- an axis the data sizes (graphs = max(graph id) + 1) cannot reach its declared size when the
    ids hold fewer values than it (nodes < graphs): what the module computes is then right, the axis is not.
    (Sizes at which an index leaves the axis it indexes are no longer left out: axis bounds are validate-time
    facts (archc/graph/bounds.py) and the exporter's check sizes stay inside them, so every such mutant either
    fails validate with a located error or builds, runs and exports here.)"""
    for node in graph.nodes:
        name = node.op.name()
        for i in node.inputs:  # int64 graph inputs holding indices (graph ids that size the output)
            if name == "embedding" or i not in graph.inputs or graph.inputs[i].dtype != "int64":
                continue
            axis, high = graph.vocab.get(i), _high(graph, i, sizes)
            if axis in node.out.shape and graph.inputs[i].numel(sizes) < high:
                return "data-sized"
    return None


def _high(graph, name: str, sizes: dict[str, int]) -> int:
    """The values an int64 input takes lie in [0, high)."""
    vocab = graph.vocab.get(name, 2)
    return sizes.get(vocab, 1) if isinstance(vocab, str) else vocab


class Shapes(fx.Interpreter):
    """Runs the module, recording each submodule's output (a node's value is its act's output when it has one)."""

    def __init__(self, module) -> None:
        super().__init__(module)
        self.seen: dict[str, Any] = {}

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        self.seen[target] = out
        return out


def check_run(module, graph, batch: int, sizes: dict[str, int], seed: int) -> None:
    """Every node's torch output has validate's shape and dtype at this batch and these axis sizes."""
    feeds = example_inputs(graph, batch, sizes, seed=seed)
    interp = Shapes(module)
    with torch.no_grad():
        interp.run(*(torch.from_numpy(v) for v in feeds.values()))
    for node in graph.nodes:
        got = interp.seen[act_path(node.id, node.act.name()) if node.act else module_path(node.id)]
        assert isinstance(got, torch.Tensor), f"{node.where}: a {type(got).__name__}, not a tensor"
        want = tuple(size(d, batch, sizes) for d in node.out.shape)
        assert tuple(got.shape) == want and str(got.dtype).removeprefix("torch.") == node.out.dtype, (
            f"{node.where} at batch {batch} {sizes}: validate says {list(want)} {node.out.dtype}, "
            f"torch gives {list(got.shape)} {got.dtype}")


LARGE_MEANS = (0.0, 2008.0, 4200.0, 1.7e9)  # numeric columns of a tabular mutant: a year, a body mass, a timestamp


def takes_a_row(c, mean: float) -> None:
    """An exported tabular mutant, wrapped to take a row as training would wrap it: the columns fitted on cells
    whose numbers lie around `mean` (spread 1), checked against Table.encode + the core (ExportError otherwise)."""
    import onnx

    from archc.data.columns import fit
    from archc.export.tabular import takes_a_row as wrap_and_check

    for name, columns in c.graph.columns.items():
        cells: dict[str, list[str]] = {}
        for col in columns:
            if col.type == "numeric":
                cells[col.name] = [f"{mean + (i % 7) * 0.37 - 1.1:.3f}" for i in range(40)]
            elif col.type == "boolean":
                cells[col.name] = [["yes", "no", "TRUE", "0"][i % 4] for i in range(40)]
            else:
                cats = list(col.categories or [f"k{j}" for j in range(col.max_categories or 1)])
                cells[col.name] = [cats[i % len(cats)] for i in range(40)]
        blob = Path(c.report.path).read_bytes()
        wrap_and_check(onnx.load_from_string(blob), blob, fit(name, list(columns), cells))


def verdict(spec: dict, exported: bool, tmp: Path, mean: float = 0.0) -> str:
    """'invalid' (located errors), 'big' (skipped), or 'built'/'exported' after every check; asserts otherwise.
    A tabular mutant that is exported is also wrapped to take a row (numbers around `mean`) and checked."""
    c = compiled_from(spec, options=BuildOptions(output=tmp / "m.onnx", exporter=EXPORTER))
    try:
        run(c, PASSES)
    except ArchcError as e:
        assert all(p.where and p.message for p in e.problems()), [p.line() for p in e.problems()]
        return "invalid"
    graph = c.graph
    if graph.total_params > MAX_PARAMS or graph.total_flops > MAX_FLOPS:
        return "big"
    run(c, [("lower", lower)])
    module = c.module
    assert sum(p.numel() for p in module.parameters()) == graph.total_params, "parameter count differs"
    reported = {row["node"]: row["params"] for row in summary_rows(graph)}  # what `archc validate` prints
    for node in graph.nodes:
        if not node.tied:  # a tied node's module holds the table it shares, counted at its owner
            own = sum(p.numel() for p in module.get_submodule(module_path(node.id)).parameters())
            assert own == reported[node.id], f"{node.where}: validate says {reported[node.id]} parameters, torch {own}"
    module.eval()
    checks = [(TRACE_BATCH, dict(graph.sizes)), *check_sizes(graph)[0]]
    skipped = []
    for i, (batch, sizes) in enumerate(checks):
        if why := left_out(graph, sizes):
            skipped.append(why)
            continue
        check_run(module, graph, batch, sizes, seed=i)
    if skipped:  # the exporter's parity check runs at these sizes too
        return skipped[0]
    if not exported:
        return "built"
    run(c, [("export", export)])
    assert c.report is not None and c.report.exporter == EXPORTER and {ch["batch"] for ch in c.report.checks} == {1, 3}
    takes_a_row(c, mean)
    return "exported"


# ---- the tests ------------------------------------------------------------------------------------------------
FUZZ = settings(max_examples=PER_BASE, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def test_every_starting_point_builds_and_exports(tmp_path) -> None:
    """The unmutated starting points pass every check (else the fuzzer's verdicts mean nothing). Exported in the
    long profile only: tests/ops/test_conformance.py exports every op example, and the specs' own tests theirs."""
    for name, spec in BASES.items():
        assert verdict(copy.deepcopy(spec), LONG, tmp_path) == ("exported" if LONG else "built"), name


def _tally(name: str, counts: dict) -> None:
    path = os.environ.get("ARCHC_FUZZ_STATS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"base": name, **counts}) + "\n")


@pytest.mark.parametrize("base", sorted(BASES))
def test_mutants_that_validate_build_run_and_export(base: str, tmp_path) -> None:
    counts: Counter = Counter()
    start = time.perf_counter()

    @FUZZ
    @given(n=st.integers(1, 3), export_it=st.integers(0, EXPORT_EVERY - 1), mean=st.sampled_from(LARGE_MEANS),
           data=st.data())
    def one(n: int, export_it: int, mean: float, data: st.DataObject) -> None:
        spec = copy.deepcopy(BASES[base])
        for _ in range(n):
            mutate(spec, data)
        counts["mutants"] += 1
        counts[verdict(spec, export_it == 0, tmp_path, mean)] += 1

    one()
    _tally(base, counts | {"seconds": round(time.perf_counter() - start, 2)})
