"""Blocks that vary per repeat: `repeat = 0`, `when` (a layer present in some repeats only) and per-repeat
expressions ("${stride if i == 0 else 1}"): a ResNet stage is one `use` line, equal to the hand-written layers."""
from __future__ import annotations

import pytest

from archc.errors import ArchcError
from archc.pipeline import compile_spec

BASIC = {  # torchvision's BasicBlock: the first block of a stage may downsample and project its shortcut
    "params": {"ch": 64, "stride": 1},
    "layers": [
        {"id": "conv1", "op": "conv2d", "out_channels": "$ch", "kernel_size": 3, "padding": 1, "bias": False,
         "stride": "${stride if i == 0 else 1}"},
        {"id": "bn1", "op": "batchnorm", "act": "relu"},
        {"id": "conv2", "op": "conv2d", "out_channels": "$ch", "kernel_size": 3, "padding": 1, "bias": False},
        {"id": "bn2", "op": "batchnorm"},
        {"id": "down", "op": "conv2d", "from": "x", "out_channels": "$ch", "kernel_size": 1, "bias": False,
         "stride": "$stride", "when": "${i == 0 and stride != 1}"},
        {"id": "down_bn", "op": "batchnorm", "when": "${i == 0 and stride != 1}"},
        {"id": "sum", "op": "add", "from": ["bn2", "down_bn"], "act": "relu"},
    ]}


def resnet_stages(*uses: dict) -> dict:
    return {"archc": 1, "model": {"name": "r"}, "inputs": {"x": {"shape": [64, 16, 16]}},
            "blocks": {"basic": BASIC}, "layers": list(uses)}


def hand_written_stage(name: str, src: str, ch: int, stride: int, n: int) -> list[dict]:
    """What a user wrote before: every block instance spelled out."""
    out, x = [], src
    for r in range(n):
        p = f"{name}_{r}_"
        layers = [{"id": p + "conv1", "op": "conv2d", "from": x, "out_channels": ch, "kernel_size": 3, "padding": 1,
                   "bias": False, "stride": stride if r == 0 else 1},
                  {"id": p + "bn1", "op": "batchnorm", "act": "relu"},
                  {"id": p + "conv2", "op": "conv2d", "out_channels": ch, "kernel_size": 3, "padding": 1,
                   "bias": False},
                  {"id": p + "bn2", "op": "batchnorm"}]
        shortcut = x
        if r == 0 and stride != 1:
            layers += [{"id": p + "down", "op": "conv2d", "from": x, "out_channels": ch, "kernel_size": 1,
                        "bias": False, "stride": stride}, {"id": p + "down_bn", "op": "batchnorm"}]
            shortcut = p + "down_bn"
        layers.append({"id": p + "sum", "op": "add", "from": [p + "bn2", shortcut], "act": "relu"})
        out, x = out + layers, p + "sum"
    return out


def structure(graph) -> list[tuple]:
    """Each node's op, attributes, activation, output shape, parameters and inputs (by position)."""
    index = {name: f"input {name}" for name in graph.inputs} | {n.id: k for k, n in enumerate(graph.nodes)}
    return [(n.op.name(), n.op.attrs(), n.act.name() if n.act else None, n.out.shape, n.params,
             [index[i] for i in n.inputs]) for n in graph.nodes]


def test_a_resnet_stage_is_one_use_line_equal_to_the_hand_written_layers():
    short = compile_spec(resnet_stages({"use": "basic", "id": "layer1", "with": {"ch": 64}, "repeat": 2},
                                       {"use": "basic", "id": "layer2", "with": {"ch": 128, "stride": 2},
                                        "repeat": 2})).graph
    flat = compile_spec({**resnet_stages(), "blocks": {},
                         "layers": hand_written_stage("layer1", "x", 64, 1, 2)
                         + hand_written_stage("layer2", "layer1_1_sum", 128, 2, 2)}).graph
    assert structure(short) == structure(flat)
    assert short.total_params == flat.total_params == 147_968 + 525_568  # torchvision resnet18 layer1 + layer2
    ids = [n.id for n in short.nodes]
    assert "layer2.0.down" in ids and "layer2.1.down" not in ids and "layer1.0.down" not in ids
    assert short.node("layer1.0.sum").inputs == ["layer1.0.bn2", "x"]  # left out: `down_bn` names its input


def test_repeat_zero_passes_the_input_on():
    s = resnet_stages({"use": "basic", "id": "none", "repeat": "${n - 1}"}, {"op": "relu", "from": "none"})
    s["params"] = {"n": 1}
    g = compile_spec(s).graph
    assert [n.id for n in g.nodes] == ["relu_1"] and g.node("relu_1").inputs == ["x"]


@pytest.mark.parametrize("uses,outputs,message", [
    ([{"use": "basic", "repeat": 0}], None,
     "layers[0]: expected an output computed by a layer, received input 'x'"),
    ([{"use": "basic", "id": "stage", "repeat": 0}], None,
     "layers[0]: expected an output computed by a layer, received 'stage', which passes input 'x' on unchanged"),
    ([{"op": "relu", "id": "r", "when": False}, {"op": "relu"}], ["r"],
     "outputs[0]: expected an output computed by a layer, received 'r', which passes input 'x' on unchanged"),
    ([{"op": "relu"}], ["x"], "outputs[0]: expected an output computed by a layer, received input 'x'"),
    ([{"op": "relu", "when": 1}], None, "layers[0].when: expected true or false, received 1"),
    ([{"op": "relu", "when": "${i == 0}"}], None, "layers[0].when: unknown parameter 'i'"),
    ([{"op": "relu", "when": False, "from": 3}], None, "layers[0].from: expected a node id or a list of them"),
    ([{"op": "relu", "when": False, "from": "nope"}], None, "layers[0].from: 'from' names unknown node 'nope'"),
    ([{"op": "conv2d", "out_channels": 4, "kernel_size": "${1 if 2 else 3}"}], None,
     "layers[0].kernel_size: expected true or false in '${1 if 2 else 3}', received 2"),
])
def test_left_out_layers_and_outputs_are_located_errors(uses, outputs, message):
    s = resnet_stages(*uses) | ({"outputs": outputs} if outputs else {})
    with pytest.raises(ArchcError) as info:
        compile_spec(s)
    errors = [str(e).removeprefix("<spec>: ") for e in getattr(info.value, "errors", [info.value])]
    assert errors[0].startswith(message), errors


def test_expressions_choose_per_repeat():
    from archc.language.exprs import evaluate
    p = {"i": 0, "s": 2, "t": 6, "down": True}
    assert evaluate("${s if i == 0 else 1}", p) == 2 and evaluate("${s if i == 0 else 1}", p | {"i": 1}) == 1
    assert evaluate("${i > 0 and t != 1}", p) is False and evaluate("${not down or 1 <= i < 3}", p) is False
    assert evaluate("${true if 0 < t <= 6 else false}", p) is True


def zoo(name: str) -> dict:
    """A spec of specs/zoo/, where the published architectures written with these features live."""
    import tomllib
    from pathlib import Path
    return tomllib.loads((Path(__file__).resolve().parents[2] / "specs" / "zoo" / f"{name}.toml").read_text())


def test_resnet18_is_one_use_line_with_torchvisions_parameter_count():
    """specs/zoo/resnet18.toml: the BASIC block above, four stages from one `use` with per-stage `with` lists."""
    s = zoo("resnet18")
    assert s["blocks"]["basic"] == BASIC
    g = compile_spec(s).graph
    assert g.total_params == 11_689_512  # torchvision.models.resnet18()
    assert g.node("stages.3.blocks.1.sum").out.shape == ("batch", 512, 7, 7)  # torchvision's layer4.1


def test_mobilenet_v2_is_one_use_line_with_torchvisions_parameter_count():
    """specs/zoo/mobilenet_v2.toml: torchvision's InvertedResidual, an optional 1x1 expansion (t != 1), a
    depthwise 3x3 that may stride, a 1x1 projection, and a residual only where shape is kept (every repeat but
    the first of a stage); the stages are the paper's table as `with` lists."""
    g = compile_spec(zoo("mobilenet_v2")).graph
    assert g.total_params == 3_504_872  # torchvision.models.mobilenet_v2()
    ids = [n.id for n in g.nodes]
    # stage 1 (t = 1, n = 1): neither the expansion nor the residual; a written repeat indexes one instance too
    assert "stages.0.blocks.0.expand" not in ids and "stages.0.blocks.0.residual" not in ids
    assert "stages.0.blocks.0.dw" in ids and "stages.0.blocks.dw" not in ids
    assert "stages.2.blocks.0.residual" not in ids and "stages.2.blocks.2.residual" in ids
    assert g.node("stages.6.blocks.0.project_bn").out.shape == ("batch", 320, 7, 7)


def test_the_readme_resnet_stage_is_this_block():
    """README's example, parsed as TOML, is the BASIC block of these tests and compiles as described."""
    import re
    import tomllib
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (example,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[blocks.basic]" in b]
    doc = tomllib.loads(example)
    assert doc["blocks"]["basic"] == BASIC
    g = compile_spec({"archc": 1, "model": {"name": "r"}, "inputs": {"x": {"shape": [64, 16, 16]}}, **doc}).graph
    ids = [n.id for n in g.nodes]
    assert "layer2.0.down" in ids and "layer2.1.down" not in ids


def test_when_on_a_use_leaves_the_whole_block_out():
    s = resnet_stages({"use": "basic", "id": "extra", "when": "${deep}"}, {"op": "relu", "id": "r", "from": "extra"})
    s["params"] = {"deep": False}
    g = compile_spec(s).graph
    assert [n.id for n in g.nodes] == ["r"] and g.node("r").inputs == ["x"]
    s["params"] = {"deep": True}
    assert compile_spec(s).graph.node("r").inputs == ["extra.sum"]


def test_the_schema_takes_when_repeat_zero_and_act_tables():
    """archc.schema.json (what editors check) accepts what archc accepts here, and keys a bad act table's op."""
    import jsonschema

    from archc.language.schema import json_schema
    validator = jsonschema.Draft202012Validator(json_schema())
    s = resnet_stages({"use": "basic", "id": "layer1", "repeat": 0, "when": "${n > 0}"},
                      {"op": "conv2d", "out_channels": 4, "kernel_size": 1, "when": True,
                       "act": {"op": "gelu", "approximate": "tanh"}},
                      {"op": "global_avg_pool", "act": "relu6"})
    s["params"] = {"n": 1}
    assert [e.message for e in validator.iter_errors(s)] == []
    compile_spec(s)
    s["layers"][1]["act"] = {"op": "linear"}
    assert [e.json_path for e in validator.iter_errors(s)] == ["$.layers[1].act.op"]


def test_with_lists_give_each_repeat_its_own_value():
    s = resnet_stages({"use": "conv", "id": "s", "repeat": 3, "with": {"ch": [64, 96, 128], "k": 3}})
    s["blocks"]["conv"] = {"params": {"ch": 8, "k": 1},
                           "layers": [{"id": "c", "op": "conv2d", "out_channels": "$ch", "kernel_size": "$k"}]}
    g = compile_spec(s).graph
    assert [g.node(f"s.{r}.c").out.shape for r in range(3)] == [
        ("batch", 64, 14, 14), ("batch", 96, 12, 12), ("batch", 128, 10, 10)]
    s = resnet_stages({"use": "basic", "id": "s", "repeat": 3, "with": {"ch": [64, 96]}})
    with pytest.raises(ArchcError) as info:
        compile_spec(s)
    assert str(info.value).startswith("<spec>: layers[0] (s).with.ch: expected 3 values (one per repeat), received 2")


def _left_out_spec(reads: list[str], ch: list[int]) -> dict:
    """A block whose 1x1 projection exists in its first repeat only, read by the merge of every repeat."""
    return {"archc": 1, "model": {"name": "w"}, "inputs": {"x": {"shape": [8, 8, 8]}},
            "blocks": {"b": {"params": {"ch": 8}, "layers": [
                {"id": "conv", "op": "conv2d", "out_channels": "$ch", "kernel_size": 3, "padding": 1},
                {"id": "proj", "op": "conv2d", "from": "x", "out_channels": "$ch", "kernel_size": 1,
                 "when": "${i == 0}"},
                {"id": "sum", "op": "add", "from": reads}]}},
            "layers": [{"id": "s", "use": "b", "with": {"ch": ch}, "repeat": 2}]}


def test_a_from_naming_a_left_out_layer_says_what_it_stands_for():
    """`proj` is left out in repeat 1 and passes its input on: the shape error that follows names the cause."""
    from archc.errors import ArchcError

    with pytest.raises(ArchcError) as e:
        compile_spec(_left_out_spec(["conv", "proj"], [16, 32]), name="w.json")
    assert e.value.line() == (
        "w.json: blocks.b.layers[2] (sum) in layers[0] (s) repeat 1: add: expected inputs of one shape (or "
        "broadcastable) to add, received [batch, 32, 8, 8] and [batch, 16, 8, 8] ('proj' stands for 'x' here: "
        "blocks.b.layers[1] (proj) in layers[0] (s) repeat 1 is left out (its `when` is false) and passes its input "
        "on; axis 1 differs: 32 vs 16)")


def test_a_merge_that_reads_one_node_twice_through_a_left_out_layer_is_a_warning(tmp_path):
    """add(x, proj) with proj left out adds x to itself: legal, so a validate warning (exit 0), located."""
    import json

    from click.testing import CliRunner

    from archc.cli import main

    graph = compile_spec(_left_out_spec(["x", "proj"], [8, 8])).graph
    (warning,) = graph.warnings
    assert warning.where == "blocks.b.layers[2] (sum).from in layers[0] (s) repeat 1"
    assert warning.message.startswith("'from' reads 'x' twice; 'proj' stands for 'x' here")
    (tmp_path / "w.json").write_text(json.dumps(_left_out_spec(["x", "proj"], [8, 8])))
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "w.json")])
    assert r.exit_code == 0 and r.stderr.startswith(f"warning: {tmp_path / 'w.json'}: blocks.b.layers[2] (sum)"), \
        r.output
    assert not compile_spec(_left_out_spec(["conv", "proj"], [8, 8])).graph.warnings  # conv + x: as meant


def test_a_written_repeat_indexes_its_instances_whatever_the_count():
    """Names do not change with the repeat count: `repeat = 1` names `s.0.conv` as `repeat = 2` does; a use without
    `repeat` is one instance, named without an index."""
    one = _left_out_spec(["conv", "proj"], [8]) | {"layers": [{"id": "s", "use": "b", "repeat": 1}]}
    assert [n.id for n in compile_spec(one).graph.nodes] == ["s.0.conv", "s.0.proj", "s.0.sum"]
    bare = one | {"layers": [{"id": "s", "use": "b"}]}
    assert [n.id for n in compile_spec(bare).graph.nodes] == ["s.conv", "s.proj", "s.sum"]
