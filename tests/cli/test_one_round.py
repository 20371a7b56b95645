"""`archc validate` reports a spec's independent mistakes in one round (issue 21, item 9): the data model's (sections,
columns, [train] keys), the later checks' ([train] recipe, [data] fractions) and the layers' own (unknown op, unknown
attribute, activation, wiring), each with where/expected/received, in the order of the file, exit 1; and no knock-on
error of a broken part. Each case's exact stderr is asserted, so a missing or an extra line fails it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.cli import main

KINDS = ("'classification', 'regression', 'language_model', 'diffusion', 'node_classification', "
         "'graph_classification', 'multilabel' or 'embedding'")

CASES = {
    # the user: a [task] typo, a column's type typo and a layer attribute typo
    "task_column_attribute": ('''archc = 1
[model]
name = "cars"
[inputs.row.columns]
cylinders = "numeric"
origin = { type = "categorcal", categories = ["eu", "us"] }
[task]
kind = "clasification"
[[layers]]
op = "linear"
out_feature = 64
act = "relu"
[[layers]]
op = "linear"
out_features = 3
''', ["inputs.row.columns.origin.type: expected 'numeric', 'categorical' or 'boolean', received 'categorcal'",
      f"task.kind: expected {KINDS}, received 'clasification'",
      "layers[0].out_feature: unknown attribute 'out_feature' (did you mean 'out_features'?)"]),
    # a [model] value, an unknown op and a [train] key
    "model_op_train_key": ('''archc = 1
[model]
name = "my model"
[inputs.x]
shape = [8]
[[layers]]
op = "linear"
out_features = 16
[[layers]]
op = "lineer"
out_features = 3
[train]
epochs = 5
batchsize = 32
''', ["model.name: expected text matching ^[A-Za-z0-9_][A-Za-z0-9_.-]*$, received 'my model'",
      "layers[1]: unknown op 'lineer' (did you mean 'linear'?)",
      "train.batchsize: unknown attribute 'batchsize' (did you mean 'batch_size'?)"]),
    # the data model passes: an activation, a wiring mistake, a recipe error and the data fractions, all at once
    "activation_wiring_recipe_fractions": ('''archc = 1
[model]
name = "m"
[inputs.x]
shape = [8]
[[layers]]
id = "h"
op = "linear"
out_features = 16
act = "rleu"
[[layers]]
op = "linear"
from = "hidden"
out_features = 3
[train]
optimizer = { name = "adam", momentum = 0.9 }
[data]
source = "csv:t.csv"
val_fraction = 0.5
test_fraction = 0.5
''', ["layers[0] (h).act: unknown activation 'rleu' (did you mean 'relu' or 'relu6'?)",
      "layers[1]: 'from' names unknown node 'hidden' (defined so far: x, h)",
      "train.optimizer.momentum: expected no momentum for optimizer 'adam' (it has none), received 0.9 "
      "(momentum and nesterov are sgd's; betas are adam's and adamw's)",
      "data: expected val_fraction + test_fraction < 1, received 0.5 + 0.5 (leave some examples for training)"]),
    # no format version (listed first, as its line is), an attribute typo and a [train] value
    "version_attribute_train_value": ('''[model]
name = "m"
[inputs.x]
shape = [8]
[[layers]]
op = "conv2d"
out_channels = 4
kernel = 3
[train]
batch_size = 0
''', ["archc: missing format version (add `archc = 1` as the first line)",
      "layers[0].kernel: unknown attribute 'kernel' (did you mean 'kernel_size'?)",
      "train.batch_size: expected a value >= 1, received 0"]),
    # a broken input: each layer is still checked on its own (op, attributes), its wiring is not
    "broken_input_layers_alone": ('''archc = 1
[model]
name = "m"
[inputs.x]
shape = "four"
[[layers]]
op = "linear"
from = "x"
out_features = 3
[[layers]]
op = "relu"
inplace = true
[[layers]]
op = "linear"
out_features = 3
act = "gelu"
bais = false
''', ["inputs.x.shape: expected a list, received 'four'",
      "layers[1].inplace: unknown attribute 'inplace' (expected one of: act, from, id, op, when)",
      "layers[2].bais: unknown attribute 'bais' (did you mean 'bias'?)"]),
}

# mistakes whose consequences would be knock-on errors: each case's lines are the only ones
KNOCK_ON = {
    # [params] broken: a layer reading $width is not checked (it would say "unknown parameter 'width'")
    "broken_parameter": ('''archc = 1
[model]
name = "m"
[params]
width = [16, 32]
[inputs.x]
shape = [8]
[[layers]]
op = "linear"
out_features = "$width"
[[layers]]
op = "linear"
out_features = 3
bais = false
''', ["params.width: expected a boolean, a number or a string, received [16, 32]",
      "layers[1].bais: unknown attribute 'bais' (did you mean 'bias'?)"]),
    # a broken layer: the layer reading it and the output naming it say nothing, beside a [task] error
    "broken_layer_read_later": ('''archc = 1
outputs = ["logits"]
[model]
name = "m"
[inputs.x]
shape = [8]
[task]
kind = "regresion"
[[layers]]
id = "h"
op = "linear"
out_features = -1
[[layers]]
id = "logits"
op = "linear"
from = "h"
out_features = 3
''', [f"task.kind: expected {KINDS}, received 'regresion'",
      "layers[0] (h).out_features: expected a value >= 1, received -1"]),
    # a broken [train] section: the recipe checks over it (momentum for adam) are not run on its parts
    "broken_train_section": ('''archc = 1
[model]
name = "m"
[inputs.x]
shape = [8]
[[layers]]
op = "linear"
out_features = 3
[train]
epochs = "ten"
optimizer = { name = "adam", momentum = 0.9 }
''', ["train.epochs: expected an integer, received 'ten'"]),
}


def _validate(tmp: Path, text: str, *flags: str):
    path = tmp / "spec.toml"
    path.write_text(text)
    return CliRunner().invoke(main, ["validate", str(path), *flags]), f"{path}: "


@pytest.mark.parametrize("name", sorted(CASES) + sorted(KNOCK_ON))
def test_every_independent_error_in_one_run(name, tmp_path):
    text, lines = CASES.get(name) or KNOCK_ON[name]
    r, prefix = _validate(tmp_path, text)
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines() == [f"error: {prefix}{line}" for line in lines]


def test_json_lists_every_error(tmp_path):
    """--json: one entry per error, each with where, message and hint, in the same order."""
    text, lines = CASES["task_column_attribute"]
    r, prefix = _validate(tmp_path, text, "--json")
    assert r.exit_code == 1, r.output
    errors = json.loads(r.stdout)["errors"]
    assert [e["line"] for e in errors] == [prefix + line for line in lines]
    assert [e["where"] for e in errors] == ["inputs.row.columns.origin.type", "task.kind", "layers[0].out_feature"]


def test_toml_syntax_error_is_one_message(tmp_path):
    """A file that is not TOML: one line with its line and column, none of its other mistakes."""
    text = CASES["model_op_train_key"][0].replace("epochs = 5", "epochs = = 5")
    r, prefix = _validate(tmp_path, text)
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines() == [f"error: {prefix}not valid TOML: Invalid value (at line 13, column 10)"]
