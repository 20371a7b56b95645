"""A tabular input declared by `columns`: the width validate infers for every column kind and encoding, the
embedding front node, every column problem as a located error (golden lines), the summary, the JSON schema."""
from __future__ import annotations

import json
import tomllib
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.data.columns import Column
from archc.errors import ArchcError
from archc.language.columns import columns as declared
from archc.language.model import Input
from archc.language.schema import json_schema
from archc.pipeline import compile_spec

PENGUINS = """archc = 1
[model]
name = "penguins"
[inputs.row]
missing = "median"
indicator = false
unknown = "error"
[inputs.row.columns]
bill_length_mm = "numeric"
island = { type = "categorical", categories = ["Biscoe", "Dream", "Torgersen"] }
sex = { type = "categorical", max_categories = 2, missing = "most_frequent", indicator = true }
year = { type = "categorical", max_categories = 3, encode = "embedding", dim = 2 }
[task]
kind = "classification"
[[layers]]
op = "linear"
out_features = 3
[data]
source = "csv:penguins.csv"
target = "species"
"""


def spec(columns: dict[str, Any], **inp: Any) -> dict[str, Any]:
    return {"archc": 1, "model": {"name": "tab"}, "inputs": {"row": {**inp, "columns": columns}},
            "layers": [{"op": "linear", "out_features": 2}]}


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ArchcError) as info:
        compile_spec(raw, name="t.json")
    return [p.line() for p in info.value.problems()]


# (column declaration, encoded values, features the layers see)
WIDTHS = [
    ("numeric", 1, 1),
    ({"type": "numeric", "scale": False}, 1, 1),
    ({"type": "numeric", "missing": "mean", "indicator": True}, 2, 2),
    ("boolean", 1, 1),
    ({"type": "boolean", "scale": True, "missing": "constant", "fill": False, "indicator": True}, 2, 2),
    ({"type": "categorical", "categories": ["a", "b", "c"]}, 3, 3),
    ({"type": "categorical", "categories": [2007, 2008]}, 2, 2),
    ({"type": "categorical", "max_categories": 5, "missing": "most_frequent", "indicator": True}, 6, 6),
    ({"type": "categorical", "max_categories": 5, "encode": "embedding", "dim": 3}, 1, 3),
    ({"type": "categorical", "categories": ["a", "b"], "encode": "embedding", "dim": 4, "unknown": "ignore",
      "missing": "constant", "fill": "a", "indicator": True}, 2, 5),
]


@pytest.mark.parametrize("decl, encoded, features", WIDTHS, ids=[json.dumps(w[0]) for w in WIDTHS])
def test_validate_infers_the_width_of_every_column_kind(decl, encoded, features):
    c = compile_spec(spec({"c": decl, "z": "numeric"}))
    assert c.graph.inputs["row"].shape == ("batch", encoded + 1)
    first = c.graph.nodes[0]
    assert c.graph.type_of(first.inputs[0] if first.op.name() == "column_embed" else "row").shape[1] == encoded + 1
    reads = c.graph.type_of(c.graph.nodes[-1].inputs[0])  # what the linear layer reads
    assert reads.shape == ("batch", features + 1)
    col = c.graph.columns["row"][0]
    assert (col.encoded_width(), col.width()) == (encoded, features)


def test_the_example_spec_from_the_contract():
    c = compile_spec(tomllib.loads(PENGUINS))
    assert c.graph.inputs["row"].shape == ("batch", 1 + 3 + 3 + 1)
    front = c.graph.nodes[0]
    assert (front.id, front.op.name(), front.where) == ("row.columns", "column_embed", "inputs.row.columns")
    assert front.out.shape == ("batch", 1 + 3 + 3 + 2)
    assert front.num_params == (3 + 1) * 2   # (slots + 1) * dim for the one embedding column
    assert c.graph.nodes[1].inputs == ["row.columns"]


def test_front_params_sum_over_embedding_columns():
    cols = {"a": {"type": "categorical", "max_categories": 4, "encode": "embedding", "dim": 3},
            "b": "numeric",
            "c": {"type": "categorical", "categories": ["x", "y"], "encode": "embedding", "dim": 5}}
    c = compile_spec(spec(cols))
    assert c.graph.nodes[0].params == {"tables.0.weight": (5, 3), "tables.1.weight": (3, 5)}
    assert c.graph.nodes[0].num_params == 5 * 3 + 3 * 5


def test_no_front_node_without_embedding_columns():
    c = compile_spec(spec({"a": "numeric", "b": {"type": "categorical", "categories": ["x", "y"]}}))
    assert [n.op.name() for n in c.graph.nodes] == ["linear"]
    assert c.graph.nodes[0].inputs == ["row"]


def test_the_input_defaults_reach_the_columns_they_fit():
    inp = Input.model_validate({"columns": {"n": "numeric", "b": "boolean", "k": {"type": "categorical",
                                                                                  "max_categories": 3}},
                                "missing": "median", "indicator": True, "unknown": "ignore", "scale": False})
    n, b, k = declared(inp)
    assert (n.missing, n.indicator, n.scaled(), n.unknown) == ("median", True, False, "error")
    assert (b.missing, b.indicator, b.scaled(), b.unknown) == ("median", True, False, "error")
    assert (k.missing, k.indicator, k.scaled(), k.unknown) == ("most_frequent", True, False, "ignore")
    assert all(c.problems() == [] for c in (n, b, k))
    own = Input.model_validate({"columns": {"n": {"type": "numeric", "missing": "mean", "indicator": False}},
                                "missing": "median", "indicator": True})
    assert declared(own)[0] == Column("n", "numeric", missing="mean", indicator=False)


# the bad declaration -> the exact error lines
GOLDEN = [
    ({"c": {"type": "categorical"}},
     ["t.json: inputs.row.columns.c: expected `categories = [...]` (fixed in the spec) or `max_categories = N` "
      "(learned from the training split, at most N) for a categorical column, received neither",
      "t.json: inputs.row.columns.c: expected at least one category, received none"]),
    ({"c": {"type": "categorical", "categories": ["a", "a"]}},
     ["t.json: inputs.row.columns.c: categories: expected distinct names, received 'a' twice"]),
    ({"c": {"type": "categorical", "categories": ["a", "NA"]}},
     ["t.json: inputs.row.columns.c: categories: expected names, received 'NA', which reads as a missing cell"]),
    ({"c": {"type": "numeric", "dim": 3}},
     ["t.json: inputs.row.columns.c: dim: only for categorical columns, received it on a numeric column"]),
    ({"c": {"type": "boolean", "encode": "embedding"}},
     ["t.json: inputs.row.columns.c: encode: only for categorical columns, received it on a boolean column"]),
    ({"c": {"type": "categorical", "max_categories": 3, "encode": "embedding"}},
     ["t.json: inputs.row.columns.c: expected `dim = N` (features per category) with encode = \"embedding\", "
      "received none"]),
    ({"c": {"type": "categorical", "max_categories": 3, "dim": 2}},
     ["t.json: inputs.row.columns.c: dim: only with encode = \"embedding\", received it with one-hot encoding"]),
    ({"c": {"type": "categorical", "max_categories": 3, "missing": "mean"}},
     ["t.json: inputs.row.columns.c: missing: expected 'error', 'most_frequent' or 'constant' for a categorical "
      "column, received 'mean'"]),
    ({"c": {"type": "numeric", "missing": "constant"}},
     ["t.json: inputs.row.columns.c: expected `fill = VALUE` with missing = \"constant\", received none"]),
    ({"c": {"type": "numeric", "fill": 0}},
     ["t.json: inputs.row.columns.c: fill: only with missing = \"constant\", received missing = 'error'"]),
    ({"c": {"type": "numeric", "missing": "constant", "fill": "zero"}},
     ["t.json: inputs.row.columns.c: fill: expected a number for a numeric column, received 'zero'"]),
    ({"c": {"type": "categorical", "categories": ["a"], "missing": "constant", "fill": "b"}},
     ["t.json: inputs.row.columns.c: fill: expected one of the listed categories, received 'b'"]),
    ({"c": {"type": "categorical", "categories": ["a"], "scale": True}},
     ["t.json: inputs.row.columns.c: scale: only for numeric and boolean columns, received it on a categorical "
      "column"]),
    ({"": "numeric"}, ["t.json: inputs.row.columns.: expected a column name, received an empty one"]),
    ({" a": "numeric"}, ["t.json: inputs.row.columns. a: expected a column name without surrounding blanks (as a "
                         "CSV header cell reads), received ' a'"]),
    ({"c": "text"}, ["t.json: inputs.row.columns.c: expected 'numeric', 'categorical' or 'boolean' or a table, "
                     "received 'text'"]),
    ({"c": {"type": "numeric", "bogus": 1}},
     ["t.json: inputs.row.columns.c.bogus: unknown attribute 'bogus' (expected one of: categories, dim, encode, fill, "
      "indicator, max_categories, missing, scale, type, unknown)"]),
]


@pytest.mark.parametrize("columns, lines", GOLDEN, ids=[json.dumps(g[0]) for g in GOLDEN])
def test_every_column_problem_is_a_located_error(columns, lines):
    assert problems(spec(columns)) == lines


def test_problems_of_several_columns_are_reported_together():
    lines = problems(spec({"a": {"type": "categorical"}, "b": "numeric", "c": {"type": "numeric", "dim": 2}}))
    assert [line.split(": ")[1] for line in lines] == ["inputs.row.columns.a"] * 2 + ["inputs.row.columns.c"]


FORM = [
    ({"archc": 1, "model": {"name": "m"}, "inputs": {"x": {}}, "layers": [{"op": "relu"}]},
     ["t.json: inputs.x: expected `shape = [...]` or, for a tabular input, `columns = {...}`, received neither"]),
    (spec({"a": "numeric"}, shape=[1]),
     ["t.json: inputs.row.shape: expected `shape` or `columns`, received both (a tabular input's width follows "
      "from its columns: remove the shape)"]),
    (spec({"a": "numeric"}, dtype="int64"),
     ["t.json: inputs.row.dtype: expected it only with `shape`, received it with `columns` (a tabular input is "
      "batched float32 rows)"]),
    (spec({"a": "numeric"}, batched=False),
     ["t.json: inputs.row.batched: expected it only with `shape`, received it with `columns` (a tabular input is "
      "batched float32 rows)"]),
    ({"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [3], "missing": "mean"}},
      "layers": [{"op": "relu"}]},
     ["t.json: inputs.x.missing: expected it only with `columns` (a default for the columns), received it with `shape`"]),
    (spec({}), ["t.json: inputs.row.columns: expected at least 1 item, received a table {}"]),
    ({**spec({"a": "numeric", "species": {"type": "categorical", "max_categories": 3}}),
      "data": {"source": "csv:p.csv", "target": "species"}},
     ["t.json: data.target: expected a target that is not a feature column, received 'species', declared in "
      "inputs.row.columns (remove 'species' from the input's columns, or name another target)"]),
]


@pytest.mark.parametrize("raw, lines", FORM, ids=range(len(FORM)))
def test_shape_or_columns_is_a_located_error(raw, lines):
    assert problems(raw) == lines


def test_a_classification_spec_whose_target_is_a_feature_is_refused():
    bad = PENGUINS.replace('target = "species"', 'target = "island"')
    assert problems(tomllib.loads(bad)) == [
        "t.json: data.target: expected a target that is not a feature column, received 'island', declared in "
        "inputs.row.columns (remove 'island' from the input's columns, or name another target)"]


def test_the_spec_hash_covers_the_columns():
    a = compile_spec(spec({"a": "numeric", "b": "boolean"}))
    b = compile_spec(spec({"a": "numeric", "b": {"type": "boolean", "missing": "most_frequent"}}))
    c = compile_spec(spec({"b": "boolean", "a": "numeric"}))  # another order is another encoded row
    assert len({a.sha256, b.sha256, c.sha256}) == 3


def test_validate_prints_the_columns(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(PENGUINS)
    r = CliRunner().invoke(main, ["validate", str(path)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    at = lines.index("columns of row: 4 columns -> 8 encoded values -> 9 features")
    assert lines[at + 1:at + 5] == [
        "  bill_length_mm  numeric      value, standardized              1",
        "  island          categorical  one-hot (3)                      3",
        "  sex             categorical  one-hot (2) + missing indicator  3",
        "  year            categorical  embedding (4 rows x 2)           2"]
    assert any(line.startswith("row.columns  column_embed  [batch, 9]") and line.split()[-2] == "8" for line in lines)
    r = CliRunner().invoke(main, ["validate", str(path), "--json"])
    report = json.loads(r.output)
    row = report["inputs"]["row"]
    assert row["shape"] == ["batch", 8]
    assert [(c["name"], c["type"], c["width"], c["encoded_width"]) for c in row["columns"]] == [
        ("bill_length_mm", "numeric", 1, 1), ("island", "categorical", 3, 3), ("sex", "categorical", 3, 3),
        ("year", "categorical", 2, 1)]
    assert row["columns"][3]["encoding"] == "embedding (4 rows x 2)"
    assert row["columns"][2]["missing"] == "most_frequent" and row["columns"][0]["missing"] == "median"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json_schema())


def schema_errors(validator, raw) -> list[tuple[str, str]]:
    return sorted((e.json_path, e.message) for e in validator.iter_errors(raw))


def test_the_schema_accepts_both_forms(validator):
    assert schema_errors(validator, tomllib.loads(PENGUINS)) == []
    assert schema_errors(validator, {**spec({"a": "numeric"}), "inputs": {"x": {"shape": [3]}}}) == []


@pytest.mark.parametrize("raw, path, words", [
    (spec({"a": "numeric"}, shape=[1]), "$.inputs.row.shape", "should not be valid under"),
    ({**spec({}), "inputs": {"x": {}}}, "$.inputs.x", "'shape' is a required property"),
    (spec({"a": "text"}), "$.inputs.row.columns.a", "'text' is not one of"),
    (spec({"a": {"type": "numeric", "missng": "mean"}}), "$.inputs.row.columns.a", "'missng' was unexpected"),
    (spec({"a": {"type": "numeric", "missing": "avg"}}), "$.inputs.row.columns.a.missing", "'avg' is not one of"),
], ids=["both", "neither", "type", "typo", "rule"])
def test_the_schema_locates_column_mistakes(validator, raw, path, words):
    found = schema_errors(validator, raw)
    assert any(p == path and words in m for p, m in found), found
    assert not any("is not valid under any of the given schemas" in m for _, m in found), found
    with pytest.raises(ArchcError):  # archc refuses it too
        compile_spec(raw)


def test_a_typo_in_a_column_table_says_what_it_meant():
    assert problems(spec({"c": {"type": "numeric", "misssing": "mean"}})) == [
        "t.json: inputs.row.columns.c.misssing: unknown attribute 'misssing' (did you mean 'missing'?)"]


def test_the_spec_language_spells_columns_as_the_data_contract_does():
    """model.py writes the words out (importing archc.data would load numpy into every CLI start): kept equal."""
    import typing

    from archc.data import columns as contract
    from archc.language import model

    for ours, theirs in ((model.MissingRule, contract.MissingRule), (model.UnknownRule, contract.UnknownRule),
                         (model.Encoding, contract.Encoding)):
        assert typing.get_args(ours) == typing.get_args(theirs)
    assert model.COLUMN_TYPES == contract.COLUMN_TYPES


def test_normalize_with_a_tabular_input_is_refused():
    raw = {**spec({"a": "numeric"}), "data": {"source": "csv:p.csv", "target": "y", "normalize": True}}
    assert problems(raw) == [
        "t.json: data.normalize: expected no normalize with a tabular input, received normalize = true and input "
        "'row' declared by columns (remove it: numeric columns are standardized by their own `scale` (on by "
        "default))"]
