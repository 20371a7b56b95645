"""Golden error messages: each bad spec gives these exact lines (file: where: expected …, received … (hint))."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.errors import ArchcError
from archc.pipeline import compile_spec
from archc.language.load import load_text

# ---- shared preambles --------------------------------------------------------------------------
FLAT = """archc = 1
[model]
name = "m"
[inputs.x]
shape = [784]
"""
IMAGE = """archc = 1
[model]
name = "m"
[inputs.image]
shape = [1, 28, 28]
"""
TWO = """archc = 1
[model]
name = "m"
[inputs.a]
shape = [4]
[inputs.b]
shape = [6]
"""
RESIDUAL = """archc = 1
[model]
name = "m"
[inputs.x]
shape = [8, 16, 16]

[blocks.res]
params = { ch = 8 }
[[blocks.res.layers]]
id = "conv"
op = "conv2d"
out_channels = "$ch"
kernel_size = 3
padding = 1
act = "relu"
[[blocks.res.layers]]
id = "sum"
op = "add"
from = ["x", "conv"]
"""
FC1 = """
[[layers]]
id = "fc1"
op = "linear"
out_features = 128
"""
TINY = """[model]
name = "m"
[inputs.x]
shape = [4]
[[layers]]
op = "relu"
"""
ACYCLIC = "graphs are acyclic: a layer reads only what comes before it"

# case name -> (file name, spec text, the exact error lines)
CASES: dict[str, tuple[str, str, list[str]]] = {
    # ---- load and check: the file, the format version, the top-level sections ----------------
    "missing_version": ("bad.toml", TINY, [
        "bad.toml: archc: missing format version (add `archc = 1` as the first line)",
    ]),
    "newer_version": ("bad.toml", "archc = 2\n" + TINY, [
        "bad.toml: archc: expected format version 1 or older, received 2 (this spec needs a newer archc; upgrade it)",
    ]),
    "version_not_int": ("bad.toml", 'archc = "1"\n' + TINY, [
        "bad.toml: archc: expected the format version as an integer (1), received '1'",
    ]),
    "toml_syntax": ("bad.toml", 'archc = 1\n[model\nname = "m"\n', [
        "bad.toml: not valid TOML: Expected ']' at the end of a table declaration (at line 2, column 7)",
    ]),
    "json_syntax": ("bad.json", '{"archc": 1, "model": {"name": "m"},}', [
        "bad.json: not valid JSON: Expecting property name enclosed in double quotes at line 1, column 37",
    ]),
    "json_top_level_not_table": ("bad.json", '[{"archc": 1}]', [
        "bad.json: expected a table (object) at the top level, received an array",
    ]),
    "missing_model": ("bad.toml", "archc = 1\n" + TINY.replace('[model]\nname = "m"\n', ""), [
        "bad.toml: model: missing required section 'model'",
    ]),
    "unknown_section": ("bad.toml", FLAT + FC1 + "[trian]\nepochs = 3\n", [
        "bad.toml: trian: unknown section 'trian' (did you mean 'train'?)",
    ]),
    "input_shape_zero": ("bad.toml", "archc = 1\n" + TINY.replace("[4]", "[0, 3]"), [
        "bad.toml: inputs.x.shape[0]: expected a value >= 1 or a name, received 0",
    ]),
    "input_bad_axis_name": ("bad.toml", "archc = 1\n" + TINY.replace("[4]", '["2seq", 3]'), [
        "bad.toml: inputs.x.shape[0]: expected an integer or a name of letters, digits and _ that does not start "
        "with a digit, received '2seq'",
    ]),
    "huge_integer": ("bad.toml", FLAT + """
[[layers]]
id = "fc1"
op = "linear"
out_features = 1_000_000_000_000_000_000_000_000_000_000
""", [
        "bad.toml: layers[0] (fc1).out_features: expected an integer within int64 (at most 2**63 - 1), "
        "received 1.0e+30",
    ]),
    # ---- one layer's attributes ----------------------------------------------------------------
    "unknown_op": ("bad.toml", FLAT + FC1.replace('"linear"', '"lineer"'), [
        "bad.toml: layers[0] (fc1): unknown op 'lineer' (did you mean 'linear'?)",
    ]),
    "unknown_attribute": ("bad.toml", FLAT + FC1.replace("out_features", "out_feature"), [
        "bad.toml: layers[0] (fc1).out_feature: unknown attribute 'out_feature' (did you mean 'out_features'?)",
    ]),
    "missing_attribute": ("bad.toml", FLAT + FC1.replace("out_features = 128\n", ""), [
        "bad.toml: layers[0] (fc1).out_features: missing required attribute 'out_features'",
    ]),
    "string_for_int": ("bad.toml", FLAT + FC1.replace("128", '"128"'), [
        "bad.toml: layers[0] (fc1).out_features: expected an integer, received '128'",
    ]),
    "bool_for_int": ("bad.toml", FLAT + FC1.replace("128", "true"), [
        "bad.toml: layers[0] (fc1).out_features: expected an integer, received true",
    ]),
    "float_for_int": ("bad.toml", FLAT + FC1.replace("128", "12.5"), [
        "bad.toml: layers[0] (fc1).out_features: expected an integer, received 12.5",
    ]),
    "dropout_out_of_range": ("bad.toml", FLAT + FC1 + '[[layers]]\nid = "drop"\nop = "dropout"\np = 1.5\n', [
        "bad.toml: layers[1] (drop).p: expected a value < 1.0, received 1.5",
    ]),
    "negative_kernel": ("bad.toml", IMAGE + """
[[layers]]
id = "conv"
op = "conv2d"
out_channels = 8
kernel_size = -3
""", [
        "bad.toml: layers[0] (conv).kernel_size: expected a value >= 1 or a list, received -3",
    ]),
    "negative_kernel_item": ("bad.toml", IMAGE + """
[[layers]]
id = "conv"
op = "conv2d"
out_channels = 8
kernel_size = [3, -3]
""", [
        "bad.toml: layers[0] (conv).kernel_size[1]: expected a value >= 1, received -3",
    ]),
    "bad_padding": ("bad.toml", IMAGE + """
[[layers]]
id = "conv"
op = "conv2d"
out_channels = 8
kernel_size = 3
padding = "full"
""", [
        "bad.toml: layers[0] (conv).padding: expected 'same' or 'valid', an integer or a list, received 'full'",
    ]),
    "unknown_activation": ("bad.toml", FLAT + FC1 + 'act = "rleu"\n', [
        "bad.toml: layers[0] (fc1).act: unknown activation 'rleu' (did you mean 'relu' or 'relu6'?)",
    ]),
    "newline_in_id": ("bad.json", json.dumps({
        "archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [4]}},
        "layers": [{"id": "a\nb", "op": "linear", "out_features": 2}]}), [
        "bad.json: layers[0] (a\\nb).id: expected a name of letters, digits and _ that does not start with a "
        "digit, received 'a\\nb'",
    ]),
    # ---- wiring ----------------------------------------------------------------------------------
    "from_unknown_node": ("bad.toml", FLAT + FC1 + """
[[layers]]
id = "fc2"
op = "linear"
out_features = 10
from = "fc"
""", [
        "bad.toml: layers[1] (fc2): 'from' names unknown node 'fc' (did you mean 'fc1'?)",
    ]),
    "from_later_layer": ("bad.toml", FLAT + FC1 + 'from = "fc2"\n' + """
[[layers]]
id = "fc2"
op = "linear"
out_features = 10
""", [
        "bad.toml: layers[0] (fc1): expected 'from' to name an input or an earlier layer, received 'fc2' "
        f"(defined later at layers[1]) ({ACYCLIC})",
    ]),
    "from_itself": ("bad.toml", FLAT + FC1 + 'from = "fc1"\n', [
        "bad.toml: layers[0] (fc1): expected 'from' to name an input or an earlier layer, received 'fc1' "
        f"(its own id) ({ACYCLIC})",
    ]),
    "from_not_strings": ("bad.json", json.dumps({
        "archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [4]}},
        "layers": [{"id": "fc", "op": "linear", "out_features": 2, "from": ["x", 3]}]}), [
        "bad.json: layers[0] (fc).from[1]: expected a string, received 3",
    ]),
    "duplicate_id": ("bad.toml", FLAT + FC1 + FC1, [
        "bad.toml: layers[1] (fc1): id 'fc1' is already used by layers[0] (fc1) (ids must be unique)",
    ]),
    "two_inputs_no_from": ("bad.toml", TWO + '[[layers]]\nid = "fc"\nop = "linear"\nout_features = 3\n', [
        "bad.toml: layers[0] (fc): expected 'from' naming this layer's input: the model has several inputs (a, b)",
    ]),
    "unknown_output": ("bad.toml", "archc = 1\noutputs = [\"logit\"]\n" + TINY.replace(
        'op = "relu"', 'id = "logits"\nop = "linear"\nout_features = 2'), [
        "bad.toml: outputs[0]: unknown node 'logit' (did you mean 'logits'?)",
    ]),
    # ---- shapes ----------------------------------------------------------------------------------
    "conv_on_flat_input": ("bad.toml", FLAT + """
[[layers]]
id = "conv"
op = "conv2d"
out_channels = 8
kernel_size = 3
""", [
        "bad.toml: layers[0] (conv): conv2d: expected an input [batch, channels, H, W] of rank 4 (batch axis "
        "included), received [batch, 784] (rank 2) (input: x [batch, 784])",
    ]),
    "kernel_larger_than_input": ("bad.toml", IMAGE.replace("[1, 28, 28]", "[1, 4, 4]") + """
[[layers]]
id = "conv"
op = "conv2d"
out_channels = 8
kernel_size = 5
""", [
        "bad.toml: layers[0] (conv): conv2d: expected spatial axis 2 of at least 5 for a window of 5 with "
        "padding 0, received 4 (input: image [batch, 1, 4, 4])",
    ]),
    "linear_on_symbolic_features": ("bad.toml", "archc = 1\n" + TINY.replace("[4]", '[4, "seq"]').replace(
        'op = "relu"', 'id = "fc"\nop = "linear"\nout_features = 8'), [
        "bad.toml: layers[0] (fc): linear: expected a fixed feature axis, received symbolic axis 'seq' "
        "(input: x [batch, 4, seq]) (this op's parameters depend on it; give that axis a fixed size)",
    ]),
    "concat_mismatch": ("bad.toml", TWO + """
[[layers]]
id = "grid"
op = "reshape"
shape = [2, 2]
from = "a"

[[layers]]
id = "cat"
op = "concat"
from = ["grid", "b"]
""", [
        "bad.toml: layers[1] (cat): concat: expected inputs of one rank, received [batch, 2, 2] and [batch, 6]",
    ]),
    "add_mismatch": ("bad.toml", TWO + '[[layers]]\nid = "sum"\nop = "add"\nfrom = ["a", "b"]\n', [
        "bad.toml: layers[0] (sum): add: expected inputs of one shape (or broadcastable) to add, received "
        "[batch, 4] and [batch, 6] (axis 1 differs: 4 vs 6)",
    ]),
    "residual_without_projection": ("bad.toml", RESIDUAL + """
[[layers]]
id = "stage"
use = "res"
with = { ch = 16 }
""", [
        "bad.toml: blocks.res.layers[1] (sum) in layers[0] (stage): add: expected inputs of one shape (or "
        "broadcastable) to add, received [batch, 8, 16, 16] and [batch, 16, 16, 16] (axis 1 differs: 8 vs 16)",
    ]),
    "reshape_wrong_count": ("bad.toml", FLAT + '[[layers]]\nid = "grid"\nop = "reshape"\nshape = [7, 7, 7]\n', [
        "bad.toml: layers[0] (grid): reshape: expected a shape of 784 elements (the input's [batch, 784]), "
        "received [7, 7, 7] (343 elements) (input: x [batch, 784])",
    ]),
    "labels_vs_output_features": ("bad.toml", FLAT + FC1 + """
[task]
kind = "classification"
labels = ["cat", "dog"]
""", [
        "bad.toml: task.labels: expected output 'fc1' to have 2 classes (one per label), received [batch, 128]",
    ]),
    # ---- blocks and parameters -----------------------------------------------------------------
    "unknown_block": ("bad.toml", RESIDUAL + '[[layers]]\nid = "stage"\nuse = "rse"\n', [
        "bad.toml: layers[0] (stage).use: unknown block 'rse' (did you mean 'res'?)",
    ]),
    "unknown_block_parameter": ("bad.toml", RESIDUAL + '[[layers]]\nid = "stage"\nuse = "res"\nwith = { chh = 8 }\n', [
        "bad.toml: layers[0] (stage).with: unknown parameter 'chh' for block 'res' (did you mean 'ch'?)",
    ]),
    "block_uses_itself": ("bad.toml", FLAT + """
[blocks.loop]
[[blocks.loop.layers]]
use = "loop"

[[layers]]
use = "loop"
""", [
        "bad.toml: blocks.loop.layers[0].use in layers[0]: block 'loop' uses itself: loop -> loop",
    ]),
    "repeat_two_input_block": ("bad.toml", TWO + """
[blocks.join]
inputs = ["p", "q"]
[[blocks.join.layers]]
op = "add"
from = ["p", "q"]
[[blocks.join.layers]]
op = "linear"
out_features = 4

[[layers]]
id = "j"
use = "join"
from = ["b", "b"]
repeat = 3
""", [
        "bad.toml: blocks.join.layers[0] in layers[0] (j) repeat 1: add: expected inputs of one shape (or "
        "broadcastable) to add, received [batch, 4] and [batch, 6] (axis 1 differs: 4 vs 6)",
    ]),
    "unknown_parameter": ("bad.toml", FLAT + "[params]\nwidth = 64\n" + FC1.replace("128", '"$widht"'), [
        "bad.toml: layers[0] (fc1).out_features: unknown parameter 'widht' (did you mean 'width'?)",
    ]),
    "bad_expression": ("bad.toml", FLAT + "[params]\nch = 64\n" + FC1.replace("128", '"${ch +}"'), [
        "bad.toml: layers[0] (fc1).out_features: expected an arithmetic expression in '${ch +}', received a "
        "syntax error",
    ]),
    "division_by_zero": ("bad.toml", FLAT + "[params]\nch = 64\n" + FC1.replace("128", '"${ch // 0}"'), [
        "bad.toml: layers[0] (fc1).out_features: division by zero in '${ch // 0}'",
    ]),
    "unknown_parameter_in_block": ("bad.toml", RESIDUAL.replace("kernel_size = 3", 'kernel_size = "$k"') + """
[[layers]]
id = "stage"
use = "res"
repeat = 2
""", [
        "bad.toml: blocks.res.layers[0] (conv).kernel_size in layers[0] (stage) repeat 0: unknown parameter 'k' "
        "(parameters in scope: ch, i, repeat)",
    ]),
    # ---- several problems, reported together -----------------------------------------------------
    "several_problems": ("bad.toml", FLAT + """
[[layers]]
id = "fc1"
op = "linear"
out_features = -1

[[layers]]
id = "fc2"
op = "linear"
out_feature = 10

[[layers]]
id = "fc3"
op = "linear"
out_features = 10
act = "rleu"
""", [
        "bad.toml: layers[0] (fc1).out_features: expected a value >= 1, received -1",
        "bad.toml: layers[1] (fc2).out_feature: unknown attribute 'out_feature' (did you mean 'out_features'?)",
        "bad.toml: layers[2] (fc3).act: unknown activation 'rleu' (did you mean 'relu' or 'relu6'?)",
    ]),
}
LOAD_ERRORS = {"toml_syntax", "json_syntax", "json_top_level_not_table"}  # about the whole file: no spec path
CLI_CASES = ["missing_version", "toml_syntax", "json_syntax", "unknown_op", "residual_without_projection",
             "several_problems", "newline_in_id"]
# ---- memory (ARCHC_MEMORY_LIMIT = 1 GiB in these tests): validate warns, build or train refuses -----------------
MEMORY = {
    "model_too_big": ("build", FLAT.replace("[784]", "[1000000]") + FC1.replace("128", "10000000"),
        "bad.toml: layers: expected a model that fits in memory (1.0 GiB), received 10,000,010,000,000 "
        "parameters needing 36.4 TiB as float32 (the largest layer is layers[0] (fc1) with 10,000,010,000,000 "
        "parameters; reduce layer sizes, or ARCHC_MEMORY_LIMIT=BYTES overrides this machine's memory)"),
    "activations_too_big": ("train", FLAT + FC1.replace("128", "1000") + "[train]\nbatch_size = 1000000\n",
        "bad.toml: train.batch_size: expected activations that fit in memory (1.0 GiB), received 3.9 KiB per "
        "example x batch 1000000 = 3.7 GiB (reduce the batch size or the layer sizes, or ARCHC_MEMORY_LIMIT=BYTES "
        "overrides this machine's memory)"),
}


@pytest.fixture
def spec_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a scratch directory (so lines name 'bad.toml') with a fixed 1 GiB memory limit."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARCHC_MEMORY_LIMIT", str(2**30))
    return tmp_path


def write(case: str) -> str:
    name, text, _ = CASES[case]
    Path(name).write_text(text, encoding="utf-8")
    return name


def test_enough_cases() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_lines(case: str, spec_dir: Path) -> None:
    name = write(case)
    with pytest.raises(ArchcError) as info:
        compile_spec(name)
    problems = info.value.problems()
    assert [p.line() for p in problems] == CASES[case][2]
    for p in problems:
        assert p.file == name
        assert p.where or case in LOAD_ERRORS, p.line()


@pytest.mark.parametrize("case", sorted(set(CASES) - LOAD_ERRORS))
def test_dict_source_gives_the_same_lines(case: str, spec_dir: Path) -> None:
    """A spec given as data (not a file) reports the same problems, named after `name`."""
    name, text, expected = CASES[case]
    raw = load_text(text, name.rsplit(".", 1)[1], name)
    with pytest.raises(ArchcError) as info:
        compile_spec(raw, name=name)
    assert [p.line() for p in info.value.problems()] == expected


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_validate(case: str, spec_dir: Path) -> None:
    """`archc validate`: exit 1, one `error: ` line per problem on stderr, no traceback."""
    name = write(case)
    result = CliRunner().invoke(main, ["validate", name])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [f"error: {line}" for line in CASES[case][2]]
    assert result.stdout == ""
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", sorted(MEMORY))
def test_memory_is_a_warning_at_validate_and_a_refusal_where_it_runs_out(case: str, spec_dir: Path) -> None:
    """validate prints the figures and the warning (exit 0); the command that would run out refuses with the
    same line, before anything is allocated."""
    from archc.graph.memory import check_fits, check_training

    command, text, line = MEMORY[case]
    Path("bad.toml").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", "bad.toml"])
    assert result.exit_code == 0, result.output
    assert "memory: weights " in result.stdout
    where, what = line.removeprefix("bad.toml: ").split(": ", 1)
    assert result.stderr.startswith(f"warning: {where}: {what.split(' (')[0]}"), result.stderr
    c = compile_spec("bad.toml")
    graph = c.graph
    with pytest.raises(ArchcError) as info:  # train: one process on this machine's CPU (archc.train.api)
        check_training(graph, c.spec.train, file="bad.toml") if command == "train" else check_fits(graph, "bad.toml")
    assert info.value.line() == line
    if command == "build":
        result = CliRunner().invoke(main, ["build", "bad.toml", "-o", "m.onnx"])
        assert (result.exit_code, result.stderr.splitlines()) == (1, [f"error: {line}"])
        assert not Path("m.onnx").exists()
    else:  # build only exports: its checks fit
        check_fits(graph)


def test_cli_validate_json(spec_dir: Path) -> None:
    """`--json` prints the same problems as data on stdout (and the lines on stderr)."""
    name = write("several_problems")
    result = CliRunner().invoke(main, ["validate", name, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [e["line"] for e in report["errors"]] == CASES["several_problems"][2]
    assert [e["where"] for e in report["errors"]] == ["layers[0] (fc1).out_features", "layers[1] (fc2).out_feature",
                                                      "layers[2] (fc3).act"]
    assert {e["kind"] for e in report["errors"]} == {"spec"}


def test_cli_missing_file(spec_dir: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "nope.toml"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["error: nope.toml: no such file"]
