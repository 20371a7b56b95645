"""Mapping files, mutated: every outcome is a clean user error or a load in which each model tensor is filled
exactly once, by the file tensor(s) the mapping's first matching rule names, and nothing is left unread that no
`drop` names.

The starting point is a GPT-2-like checkpoint under a prefix (a fused q/k/v that is transposed and split, two
halves concatenated, norms kept, a renamed head, a dropped mask, an integer buffer) and its mapping. Mutations
add prefixes and prefixed copies of file tensors (two names that strip to one), point rules at each other's
targets or sources, add keep and drop names, placeholders, empty and duplicated names, and flip transposes and
axes. Each file tensor holds one distinct constant, so a loaded model tensor says which file tensor filled it; the
oracle is written here from the documented rules (strip the first matching prefix, skip what `drop` names as
stripped or as written, take the first rule whose `from` matches), not from archc's planner.

Profiles: CI (default) runs EXAMPLES mutants (a few seconds); ARCHC_FUZZ=long (`make fuzz`) runs LONG_EXAMPLES.
"""
from __future__ import annotations

import copy
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from archc.errors import ModelError, SpecError
from archc.weights.mapping import Pattern

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.fuzz
from safetensors.torch import save_file  # noqa: E402

from archc.weights import load_into  # noqa: E402

LONG = os.environ.get("ARCHC_FUZZ", "") == "long"
EXAMPLES = 6000 if LONG else 150
LAYERS = 2

# the model's tensors (a state_dict) and the checkpoint's, in another library's naming under a prefix
MODEL = {f"h.{i}.{k}": s for i in range(LAYERS) for k, s in
         (("q.weight", (4, 4)), ("k.weight", (4, 4)), ("v.weight", (4, 4)), ("ln.weight", (4,)), ("up.weight", (8, 4)))}
MODEL |= {"wte.weight": (10, 4), "head.bias": (3,), "bn.num_batches_tracked": ()}
FILE = {f"tr.h.{i}.{k}": s for i in range(LAYERS) for k, s in
        (("c_attn.weight", (4, 12)), ("ln.weight", (4,)), ("w1", (4, 4)), ("w3", (4, 4)), ("attn.bias", (1, 1, 4, 4)))}
FILE |= {"tr.wte.weight": (10, 4), "lm.b": (3,), "bn.num_batches_tracked": ()}
MAPPING = {"archc_weights": 1, "strip_prefix": ["tr."], "drop": ["h.{i}.attn.bias"],
           "keep": ["wte.weight", "h.{i}.ln.weight", "bn.num_batches_tracked"],
           "map": [{"from": "h.{i}.c_attn.weight", "to": ["h.{i}.q.weight", "h.{i}.k.weight", "h.{i}.v.weight"],
                    "transpose": True, "axis": 0},
                   {"from": ["h.{i}.w1", "h.{i}.w3"], "to": "h.{i}.up.weight", "axis": 0},
                   {"from": "lm.b", "to": "head.bias"}]}
INTS = {"bn.num_batches_tracked"}
PREFIXES = ["tr.", "x.", "tr.h.", "h.", "model.", "tr.tr."]


class StateDict:
    """A model as Init.load sees one: a state_dict, here of NaN (or -1) tensors no load has touched."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self.tensors = {k: torch.full(s, -1, dtype=torch.int64) if k in INTS else torch.full(s, float("nan"))
                        for k, s in shapes.items()}

    def state_dict(self) -> dict[str, Any]:
        return self.tensors


# ---- mutations ------------------------------------------------------------------------------------------------
def _rules(m: dict) -> list[dict]:
    return m.setdefault("map", [])


def _names(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _indexed(name: str, data: st.DataObject) -> str:
    """A concrete name with one index made a placeholder, or a pattern made concrete (or left as it is)."""
    how = data.draw(st.sampled_from(["same", "place", "concrete"]))
    if how == "place":
        return ".".join("{i}" if p.isdigit() else p for p in name.split("."))
    if how == "concrete":
        return name.replace("{i}", str(data.draw(st.integers(0, LAYERS))))
    return name


def mutate(m: dict, files: dict[str, tuple[int, ...]], data: st.DataObject) -> str:
    """One mutation of the mapping `m` or of the file's names `files`, in place; returns its kind."""
    kind = data.draw(st.sampled_from(KINDS))
    names = sorted(files)
    targets = sorted(MODEL) + [t for r in _rules(m) for t in _names(r.get("to", []))]
    sources = names + [s for r in _rules(m) for s in _names(r.get("from", []))]
    if kind == "prefix":  # a prefix more, fewer, or in another order
        strip = m.setdefault("strip_prefix", [])
        how = data.draw(st.sampled_from(["add", "remove", "reverse"]))
        if how == "add":
            strip.insert(data.draw(st.integers(0, len(strip))), data.draw(st.sampled_from(PREFIXES + [""])))
        elif how == "remove" and strip:
            strip.pop(data.draw(st.integers(0, len(strip) - 1)))
        else:
            strip.reverse()
    elif kind == "copy":  # a file tensor also under another prefix, or without its own: mostly two names that
        name = data.draw(st.sampled_from(names))  # strip to one
        short = _stripped(m, name)
        twins = [short] + [p + short for p in m.get("strip_prefix", []) if isinstance(p, str)]
        other = data.draw(st.sampled_from(twins if data.draw(st.integers(0, 2)) else [p + name for p in PREFIXES]))
        files[other] = files[name]
    elif kind == "rename":  # a file tensor's prefix removed or changed (a copy without its original)
        name = data.draw(st.sampled_from(names))
        files[data.draw(st.sampled_from(PREFIXES)) + name.split(".", 1)[-1]] = files.pop(name)
    elif kind == "target" and _rules(m):  # a rule's target made another's (or a model name)
        rule = data.draw(st.sampled_from(_rules(m)))
        new = _indexed(data.draw(st.sampled_from(targets)), data)
        if isinstance(rule.get("to"), list) and rule["to"] and data.draw(st.booleans()):
            rule["to"][data.draw(st.integers(0, len(rule["to"]) - 1))] = new
        else:
            rule["to"] = new
    elif kind == "source" and _rules(m):  # a rule's source made another's (or a file name)
        rule = data.draw(st.sampled_from(_rules(m)))
        new = _indexed(data.draw(st.sampled_from(sources)).removeprefix("tr."), data)
        if isinstance(rule.get("from"), list) and rule["from"] and data.draw(st.booleans()):
            rule["from"][data.draw(st.integers(0, len(rule["from"]) - 1))] = new
        else:
            rule["from"] = new
    elif kind == "rule":  # a new rename, from a file name to a model name
        src = _indexed(data.draw(st.sampled_from(sources)).removeprefix("tr."), data)
        dst = _indexed(data.draw(st.sampled_from(targets)), data)
        _rules(m).insert(data.draw(st.integers(0, len(_rules(m)))), {"from": src, "to": dst})
    elif kind in ("keep", "drop"):  # a name more in keep or drop (a file's or the model's)
        pool = [n.removeprefix("tr.") for n in names] + sorted(MODEL)
        m.setdefault(kind, []).append(_indexed(data.draw(st.sampled_from(pool)), data))
    elif kind == "unlist":  # a keep, drop or rule gone
        key = data.draw(st.sampled_from(["keep", "drop", "map"]))
        if m.get(key):
            m[key].pop(data.draw(st.integers(0, len(m[key]) - 1)))
    elif kind == "twice" and _rules(m):  # a name written twice in one rule, or two placeholders side by side
        rule = data.draw(st.sampled_from(_rules(m)))
        side = data.draw(st.sampled_from(["from", "to"]))
        if data.draw(st.booleans()):
            rule[side] = _names(rule.get(side, ["a"])) * 2
        else:
            rule[side] = [n.replace("{i}", "{i}{j}") for n in _names(rule.get(side, ["a"]))]
    elif kind == "shape" and _rules(m):  # transpose flipped, or another axis
        rule = data.draw(st.sampled_from(_rules(m)))
        if data.draw(st.booleans()):
            rule["transpose"] = not rule.get("transpose", False)
        else:
            rule["axis"] = data.draw(st.integers(-3, 2))
    return kind


KINDS = ["prefix", "copy", "copy", "rename", "target", "target", "source", "rule", "rule", "keep", "drop",
         "unlist", "twice", "shape"]


# ---- the oracle -----------------------------------------------------------------------------------------------
def _stripped(m: dict, name: str) -> str:
    for prefix in m.get("strip_prefix", []):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _first_rule(m: dict, short: str) -> tuple[int, dict, dict[str, str]] | None:
    """The first rule (keep, then map, in order) one of whose sources matches: its index, itself, its bindings."""
    rules = [{"from": k, "to": k} for k in m.get("keep", [])] + m.get("map", [])
    for r, rule in enumerate(rules):
        for source in _names(rule["from"]):
            bound = Pattern.parse(source, "").match(short)
            if bound is not None:
                return r, rule, bound
    return None


def check_load(m: dict, files: dict[str, tuple[int, ...]], model: StateDict, dropped: int) -> None:
    """Each model tensor holds exactly the constants of the file tensors that the first matching rule sends to it,
    all from one group of that rule (one concatenation, one split, one rename); a file tensor neither read nor
    dropped by name fails (it would have been silently lost), as does a summary that counts other tensors."""
    held = {k: set(torch.unique(v.double()).tolist()) for k, v in model.tensors.items()}
    want: dict[str, set[float]] = {k: set() for k in held}
    groups: dict[str, set[tuple]] = {k: set() for k in held}
    want_dropped = 0
    for i, name in enumerate(files):
        short = _stripped(m, name)
        if any(Pattern.parse(d, "").match(n) is not None for d in m.get("drop", []) for n in (short, name)):
            want_dropped += 1
            continue
        hit = _first_rule(m, short)
        assert hit is not None, f"{name} matches no rule, yet the load succeeded"
        r, rule, bound = hit
        for t in _names(rule["to"]):
            target = Pattern.parse(t, "").fill(bound)
            assert target in want, f"{name} (as {short}) goes to {target}, which the model does not have"
            want[target].add(float(i + 1))
            groups[target].add((r, tuple(sorted(bound.items()))))
    for t in held:
        assert held[t] == want[t], f"{t} holds {held[t]}, the rules send it {want[t]} ({', '.join(files)})"
        assert len(groups[t]) == 1, f"{t} is filled by {len(groups[t])} rules or groups: {groups[t]}"
    assert dropped == want_dropped, f"the summary says {dropped} dropped, the drop names match {want_dropped}"


def _toml(m: dict) -> str:
    """The mapping as TOML (strings, integers, booleans, lists of them, and the [[map]] tables)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)  # a TOML basic string or an integer

    lines = [f"{k} = {value(v)}" for k, v in m.items() if k != "map"]
    for rule in m.get("map", []):
        lines += ["[[map]]"] + [f"{k} = {value(v)}" for k, v in rule.items()]
    return "\n".join(lines) + "\n"


def verdict(m: dict, files: dict[str, tuple[int, ...]], tmp: Path) -> str:
    """'refused' (a located user error) or 'loaded' (checked by the oracle)."""
    tensors = {name: torch.full(shape, i + 1, dtype=torch.int64 if name in INTS else torch.float32)
               for i, (name, shape) in enumerate(files.items())}
    save_file(tensors, tmp / "w.safetensors")
    (tmp / "m.toml").write_text(_toml(m))
    model = StateDict(MODEL)
    try:
        loaded = load_into(model, tmp / "w.safetensors", tmp / "m.toml")
    except (ModelError, SpecError) as e:
        assert all(p.message and p.file for p in e.problems()), [p.line() for p in e.problems()]
        return "refused"
    check_load(m, files, model, loaded.dropped)
    return "loaded"


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def test_the_starting_point_loads(tmp_path) -> None:
    assert verdict(copy.deepcopy(MAPPING), dict(FILE), tmp_path) == "loaded"


def test_mutated_mappings_load_exactly_once_or_are_refused(tmp_path) -> None:
    counts: Counter = Counter()

    @FUZZ
    @given(n=st.integers(1, 2), data=st.data())
    def one(n: int, data: st.DataObject) -> None:
        m, files = copy.deepcopy(MAPPING), dict(FILE)
        for _ in range(n):
            mutate(m, files, data)
        counts[verdict(m, files, tmp_path)] += 1

    start = time.perf_counter()
    one()
    if path := os.environ.get("ARCHC_FUZZ_STATS"):  # `make fuzz` sums these with the build fuzzer's
        with open(path, "a") as f:
            f.write(json.dumps({"base": "weights-mapping", "mutants": counts["refused"] + counts["loaded"],
                                "refused": counts["refused"], "loaded": counts["loaded"],
                                "seconds": round(time.perf_counter() - start, 2)}) + "\n")
    assert counts["loaded"] > EXAMPLES // 20 and counts["refused"] > EXAMPLES // 5, counts  # both outcomes reached
