"""Mapping files are data: `{name}` placeholders match decimal indices and nothing else is a pattern; bad rules
and every mismatch between a file and a model are reported at once, located, before any tensor is read."""
from __future__ import annotations

import pytest

from archc.errors import ArchcError, ModelError, SpecError
from archc.weights.file import TensorInfo
from archc.weights.mapping import Pattern, parse
from archc.weights.plan import Expected, plan


def _map(**data):
    return parse({"archc_weights": 1} | data, "m.toml")


def _infos(**shapes):
    return {k.replace("__", "."): TensorInfo("F32", v) for k, v in shapes.items()}


def test_placeholders_match_indices_only_and_everything_else_literally():
    p = Pattern.parse("h.{i}.attn.c_attn.weight", "x")
    assert p.match("h.11.attn.c_attn.weight") == {"i": "11"}
    assert p.match("h.x.attn.c_attn.weight") is None and p.match("h.01.attn.c_attn.weight") is None
    assert p.match("hX11.attn.c_attn.weight") is None  # '.' is a dot, not "any character"
    star = Pattern.parse("a.*(b|c)+", "x")  # regex syntax from a user is text, never compiled as a pattern
    assert star.match("a.*(b|c)+") == {} and star.match("a.bbb") is None
    assert Pattern.parse("l.{i}.{j}.w", "x").fill({"i": "3", "j": "0"}) == "l.3.0.w"


@pytest.mark.parametrize("data, where, says", [
    ({"archc_weights": 2}, "archc_weights", "expected archc_weights = 1"),
    ({"archc_weights": 1, "rename": []}, "rename", "unknown key 'rename'"),
    ({"archc_weights": 1, "map": [{"from": "a.{i", "to": "b"}]}, "map[0].from", "placeholders written {name}"),
    ({"archc_weights": 1, "map": [{"from": "a.{i}.{i}", "to": "b"}]}, "map[0].from", "each placeholder once"),
    ({"archc_weights": 1, "map": [{"from": "a.{i}", "to": "b.{j}"}]}, "map[0]", "expected the placeholders"),
    ({"archc_weights": 1, "map": [{"from": ["a", "b"], "to": ["c", "d"]}]}, "map[0]", "one `from` or one `to`"),
    ({"archc_weights": 1, "map": [{"from": "a", "to": "b", "transpose": "yes"}]}, "map[0].transpose", "true or"),
    ({"archc_weights": 1, "map": [{"from": "a", "to": "b", "code": "import os"}]}, "map[0].code", "unknown key"),
    ({"archc_weights": 1, "map": [{"from": "a"}]}, "map[0].to", "expected a tensor name"),
    ({"archc_weights": 1, "map": [{"from": "a", "to": "b", "axis": 1}]}, "map[0].axis", "only where a rule splits"),
    ({"archc_weights": 1, "map": [{"from": ["a", "a"], "to": "b"}]}, "map[0].from", "received 'a' twice"),
    ({"archc_weights": 1, "map": [{"from": "a", "to": ["b", "b"]}]}, "map[0].to", "received 'b' twice"),
    ({"archc_weights": 1, "map": [{"from": "a{i}{j}", "to": "b.{i}.{j}"}]}, "map[0].from", "other than a digit"),
    ({"archc_weights": 1, "keep": ["l.{i}1{j}"]}, "keep[0]", "other than a digit between two placeholders"),
    # index arithmetic, word placeholders and numbering: parsed by hand, errors at the rule and side
    ({"archc_weights": 1, "map": [{"from": "a.{i}", "to": "b.{i/2}"}]}, "map[0].to", "index expression"),
    ({"archc_weights": 1, "map": [{"from": "a.{i}", "to": "b.{i*i}"}]}, "map[0].to", "no placeholder times"),
    ({"archc_weights": 1, "map": [{"from": "a.{i}.{j}", "to": "b.{i+j}"}]}, "map[0].to", "exactly one placeholder"),
    ({"archc_weights": 1, "map": [{"from": "a.{i}", "to": "b.{3}"}]}, "map[0].to", "exactly one placeholder"),
    ({"archc_weights": 1, "map": [{"from": "a.{i}", "to": "b.{i-i}"}]}, "map[0].to", "depends on its placeholder"),
    ({"archc_weights": 1, "map": [{"from": "a.{i}", "to": "b.{__import__('os')}"}]}, "map[0].to",
     "index expression"),
    ({"archc_weights": 1, "map": [{"from": "a.{i}", "to": "b.{(i+1}"}]}, "map[0].to", "closing parenthesis"),
    ({"archc_weights": 1, "map": [{"from": "a.{k:name}", "to": "b.{k}"}]}, "map[0].from", "{name:word}"),
    ({"archc_weights": 1, "map": [{"from": "a.{k:word}_w", "to": "b.{k}"}]}, "map[0].from", "name's end"),
    ({"archc_weights": 1, "map": [{"from": "a.{k:word}", "to": "b.{k:word}"}]}, "map[0].to", "says it is a word"),
    ({"archc_weights": 1, "map": [{"from": "a.{n.stage}", "to": "b.{n}"}]}, "map[0].from", "only in a `to`"),
    ({"archc_weights": 1, "map": [{"from": "a.{n}", "to": "b.{n.stage}"}]}, "map[0].to", "[numbering.n] table"),
    ({"archc_weights": 1, "map": [{"from": "a.{n}", "to": "b.{n.layer}"}]}, "map[0].to", "n.stage or n.block"),
    ({"archc_weights": 1, "numbering": {"n": {"first": 1, "stages": []}}}, "numbering.n.stages", "list of integers"),
    ({"archc_weights": 1, "numbering": {"n": {"first": -1, "stages": [2]}}}, "numbering.n.first", ">= 0"),
    ({"archc_weights": 1, "numbering": {"n": {"first": 1, "stages": [2], "step": 2}}}, "numbering.n.step",
     "unknown key"),
])
def test_bad_mappings_are_located(data, where, says):
    with pytest.raises(ArchcError) as e:
        parse(data, "m.toml")
    err = e.value.problems()[0]
    assert isinstance(err, SpecError) and err.file == "m.toml" and err.where == where and says in err.message


def test_index_expressions_are_solved_in_from_and_computed_in_to():
    """`from` matches file names: its expression is solved (no whole, non-negative solution: no match); `to` is
    filled: computed, and a negative index leaves the file tensor to the next rule."""
    odd = Pattern.parse("features.{2*s+1}.w", "x")
    assert odd.match("features.5.w") == {"s": "2"} and odd.match("features.4.w") is None
    assert odd.match("features.1.w") == {"s": "0"} and odd.fill({"s": "3"}) == "features.7.w"
    assert Pattern.parse("l.{-(1-i)*3}", "x", "to").fill({"i": "2"}) == "l.3"
    m = _map(map=[{"from": "layer{n}.{b}.{t:word}", "to": "stages.{n-1}.blocks.{b}.{t}"},
                  {"from": "layer{n}.{b}.{t:word}", "to": "stem.{n}.{b}.{t}"}])  # layer0: the first computes -1
    assert m.rules[0].bind(0, "layer3.1.running_mean") == {"n": "3", "b": "1", "t": "running_mean"}
    assert m.rules[0].bind(0, "layer0.1.w") is None and m.rules[1].bind(0, "layer0.1.w") is not None
    assert m.rules[0].bind(0, "layer3.1.a.b") is None  # a word is one dotted part
    assert Pattern.parse("a.{k:word}", "x").match("a.0") == {"k": "0"}  # digits are a word too


def test_numbering_counts_blocks_across_stages():
    """torchvision's features.{n}: blocks numbered through the stages, split back into stage and block."""
    m = _map(numbering={"n": {"first": 2, "stages": [2, 3, 1], "first_stage": 1}},
             map=[{"from": "features.{n}.w", "to": "stages.{n.stage}.blocks.{n.block}.w"}])
    rule = m.rules[0]
    names = {f"features.{n}.w": rule.targets[0].fill(b) if (b := rule.bind(0, f"features.{n}.w")) else None
             for n in range(9)}
    assert names == {"features.0.w": None, "features.1.w": None, "features.2.w": "stages.1.blocks.0.w",
                     "features.3.w": "stages.1.blocks.1.w", "features.4.w": "stages.2.blocks.0.w",
                     "features.5.w": "stages.2.blocks.1.w", "features.6.w": "stages.2.blocks.2.w",
                     "features.7.w": "stages.3.blocks.0.w", "features.8.w": None}


def test_fused_transposed_split_concat_and_drop_plan():
    m = _map(drop=["h.{i}.attn.bias"], keep=["ln.weight"], strip_prefix=["transformer."],
             map=[{"from": "h.{i}.qkv", "to": ["b.{i}.q", "b.{i}.k", "b.{i}.v"], "transpose": True},
                  {"from": ["h.{i}.w1", "h.{i}.w3"], "to": "b.{i}.up", "axis": 0}])
    infos = _infos(transformer__h__0__qkv=(4, 12), h__0__attn__bias=(1, 1, 8, 8), h__0__w1=(5, 4), h__0__w3=(5, 4),
                   ln__weight=(4,))
    expected = {"b.0.q": Expected((4, 4), True), "b.0.k": Expected((4, 4), True), "b.0.v": Expected((4, 4), True),
                "b.0.up": Expected((10, 4), True), "ln.weight": Expected((4,), True)}
    steps = plan(m, infos, expected, "w.safetensors")
    assert sorted((s.sources, s.targets) for s in steps) == [
        (("h.0.w1", "h.0.w3"), ("b.0.up",)), (("ln.weight",), ("ln.weight",)),
        (("transformer.h.0.qkv",), ("b.0.q", "b.0.k", "b.0.v"))]


def test_every_mismatch_in_one_located_error():
    m = _map(map=[{"from": "h.{i}.w", "to": "b.{i}.w", "transpose": True},
                  {"from": ["h.{i}.a", "h.{i}.c"], "to": "b.{i}.ac"},
                  {"from": "h.{i}.x", "to": ["b.{i}.x1", "b.{i}.x2"]},
                  {"from": "typo.{i}", "to": "b.{i}.nope"}])
    infos = _infos(h__0__w=(3, 2), h__1__w=(2, 3), h__0__a=(2,), h__0__x=(5,), stray=(7,), typo__0=(1,))
    infos["h.1.i"] = TensorInfo("I64", (2,))
    expected = {f"b.{i}.w": Expected((2, 3), True) for i in (0, 1)} | {
        "b.0.ac": Expected((4,), True), "b.0.x1": Expected((2,), True), "b.0.x2": Expected((2,), True),
        "b.0.norm": Expected((3,), True)}
    with pytest.raises(ModelError) as e:
        plan(m, infos, expected, "w.safetensors")
    err = e.value
    assert err.file == "w.safetensors" and err.where == "--map m.toml"
    text = err.message
    assert text.startswith("expected every tensor of the model filled exactly once and every tensor of the file used, "
                           "received")
    assert "missing: b.0.norm [3], h.0.c (file tensor, concatenated with h.0.a into b.0.ac by map[1])" in text
    assert "b.1.w: expected [2, 3], received [3, 2] from h.1.w by map[0]" in text
    assert "h.0.x by map[2]: cannot split axis 0 of [5] into 2 equal parts" in text
    assert "extra: stray [7], h.1.i [2], typo.0 by map[3] (to b.0.nope, which the model does not have)" in text
    assert "b.1.ac" not in text and len(err.problems()) == 1  # one error, one line
    assert "\n" not in err.line()


def test_filled_twice_and_wrong_dtype():
    m = _map(map=[{"from": "a", "to": "w"}, {"from": "b", "to": "w"}, {"from": "i", "to": "f"},
                  {"from": "c", "to": "n"}])
    infos = {"a": TensorInfo("F32", (2,)), "b": TensorInfo("BF16", (2,)), "i": TensorInfo("I32", (2,)),
             "c": TensorInfo("F16", ())}
    expected = {"w": Expected((2,), True), "f": Expected((2,), True), "n": Expected((), False)}
    with pytest.raises(ModelError) as e:
        plan(m, infos, expected, "w.safetensors")
    assert "1 filled twice: w from a by map[0] and from b by map[1]" in e.value.message
    assert "2 mis-typed: f: expected floats, received I32 from i by map[2], " in e.value.message
    assert "n: expected integers, received F16 from c by map[3]" in e.value.message


def _fills_twice(**data) -> str:
    with pytest.raises(ModelError) as e:
        plan(_map(**data), _infos(transformer__fc__w=(2,), fc__w=(2,), fc__b=(2,), other=(2,)),
             {"fc.w": Expected((2,), True), "fc.b": Expected((2,), True)}, "w.safetensors")
    assert len(e.value.problems()) == 1 and "missing" not in e.value.message
    return e.value.message


@pytest.mark.parametrize("data, says", [
    # strip_prefix makes two file names one: the last one read used to win, silently
    ({"strip_prefix": ["transformer."], "keep": ["fc.w", "fc.b"], "drop": ["other"]},
     "1 filled twice: fc.w from transformer.fc.w (as fc.w) and from fc.w, each by keep[0]"),
    ({"strip_prefix": ["transformer."], "keep": ["fc.b"], "map": [{"from": "fc.w", "to": "fc.w"}], "drop": ["other"]},
     "1 filled twice: fc.w from transformer.fc.w (as fc.w) and from fc.w, each by map[0]"),
    # two rules, or a keep and a rule, into one target
    ({"keep": ["fc.w", "fc.b"], "map": [{"from": "other", "to": "fc.w"}], "drop": ["transformer.fc.w"]},
     "1 filled twice: fc.w from fc.w by keep[0] and from other by map[0]"),
    ({"keep": ["fc.b"], "map": [{"from": "transformer.fc.w", "to": "fc.w"}, {"from": "fc.w", "to": "fc.w"}],
      "drop": ["other"]}, "1 filled twice: fc.w from transformer.fc.w by map[0] and from fc.w by map[1]"),
    # a split whose parts land on a tensor another rule fills
    ({"keep": ["fc.w", "fc.b"], "map": [{"from": "other", "to": ["fc.b", "x"]}], "drop": ["transformer.fc.w"]},
     "fc.b from fc.b by keep[1] and from other by map[0]"),
])
def test_one_tensor_filled_twice_names_the_target_both_sources_and_their_rules(data, says):
    assert says in _fills_twice(**data)


def test_placeholders_that_fill_one_target_twice():
    """`b.{i}{j}` writes i=1, j=11 and i=11, j=1 as one name: the plan refuses, it never picks one."""
    m = _map(map=[{"from": "h.{i}.{j}", "to": "b.{i}x{j}"}])
    infos = _infos(h__1__12=(2,), h__11__2=(2,))
    assert plan(m, infos, {"b.1x12": Expected((2,), True), "b.11x2": Expected((2,), True)}, "w")
    m = _map(map=[{"from": "h.{i}.{j}", "to": "b.{i}.x{j}"}, {"from": "g.{i}", "to": "b.{i}.x1"}])
    with pytest.raises(ModelError, match=r"filled twice: b.0.x1 from h.0.1 by map\[0\] and from g.0 by map\[1\]"):
        plan(m, _infos(h__0__1=(2,), g__0=(2,)), {"b.0.x1": Expected((2,), True)}, "w")


def test_dropped_counts_only_drop_rules(tmp_path):
    """The summary's "N dropped" is what `drop` names, and every other file tensor is read or an error."""
    import torch
    from safetensors.torch import save_file

    from archc.weights import load_into

    model = torch.nn.Linear(2, 2)
    save_file({"m.weight": torch.ones(2, 2), "m.bias": torch.ones(2), "mask": torch.ones(3)},
              tmp_path / "w.safetensors")
    (tmp_path / "m.toml").write_text('archc_weights = 1\nstrip_prefix = ["m."]\nkeep = ["weight", "bias"]\n'
                                     'drop = ["mask"]\n')
    loaded = load_into(model, tmp_path / "w.safetensors", tmp_path / "m.toml")
    assert (loaded.tensors, loaded.read, loaded.dropped) == (2, 2, 1)
    assert float(model.weight.detach().sum()) == 4.0


def test_a_drop_name_as_written_resolves_two_names_that_strip_to_one():
    """The hint of "filled twice" can be followed: `drop` matches a file name as written, too."""
    m = _map(strip_prefix=["transformer."], keep=["fc.w", "fc.b"], drop=["transformer.fc.w", "other"])
    infos = _infos(transformer__fc__w=(2,), fc__w=(2,), fc__b=(2,), other=(2,))
    steps = plan(m, infos, {"fc.w": Expected((2,), True), "fc.b": Expected((2,), True)}, "w.safetensors")
    assert sorted(s.sources for s in steps) == [("fc.b",), ("fc.w",)]
    assert [n for n in infos if m.drops(n)] == ["transformer.fc.w", "other"]


def test_a_solved_expression_inverts_the_computed_one():
    """For every linear form a*x+b in a `from`, matching the name a `to` of the same form fills gives x back, and a
    number the form never takes matches nothing."""
    import random

    rng = random.Random(0)
    for _ in range(300):
        a, b = rng.choice([1, 2, 3, 7]), rng.randrange(0, 20)
        form = rng.choice([f"{a}*i+{b}", f"i*{a}+{b}", f"{b}+{a}*i", f"({a})*(i) + {b}", f"{a}*(i+1)-{a}+{b}"])
        src, dst = Pattern.parse(f"w.{{{form}}}.x", "x"), Pattern.parse(f"w.{{{form}}}.x", "x", "to")
        x = rng.randrange(0, 1000)
        assert src.match(dst.fill({"i": str(x)})) == {"i": str(x)}
        off = a * x + b + rng.randrange(1, a) if a > 1 else None
        assert off is None or src.match(f"w.{off}.x") is None
        assert b == 0 or src.match(f"w.{rng.randrange(0, b)}.x") is None  # below b: x would be negative
