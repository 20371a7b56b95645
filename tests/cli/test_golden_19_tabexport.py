"""Golden messages for issue 19's "a run that ends without its model" class: names the model that takes a row
cannot hold (one ONNX input per column, beside the model's other inputs and outputs) are validate errors located at
inputs.NAME.columns.COL, found before any training, and an output named twice; the CLI's exact first line of stderr and exit 1. Paths are
written as TMP/... (The large-mean columns that failed the final parity check now train and export:
tests/train/test_large_mean_columns.py.)"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from archc.cli import main


def _csv(path: Path, columns: list[str]) -> Path:
    rows = [",".join([*(f"{(i * 7 + k) % 11 / 3:.2f}" for k in range(len(columns))), "ab"[i % 2]])
            for i in range(40)]
    path.write_text(",".join([*columns, "label"]) + "\n" + "\n".join(rows) + "\n")
    return path


def _spec(tmp: Path, inputs: dict, layers: list | None = None, **top) -> Path:
    columns = [c for inp in inputs.values() for c in inp.get("columns", {})]
    spec = {"archc": 1, "model": {"name": "golden"}, "inputs": inputs, "task": {"kind": "classification"},
            "layers": layers or [{"id": "hidden", "op": "linear", "out_features": 4, "act": "relu"},
                                 {"id": "logits", "op": "linear", "out_features": 2}],
            "train": {"epochs": 1, "batch_size": 8},
            "data": {"source": f"csv:{_csv(tmp / 'rows.csv', columns)}", "target": "label"}} | top
    (tmp / "s.json").write_text(json.dumps(spec))
    return tmp / "s.json"


CASES: dict[str, tuple[Callable[[Path], list], str]] = {}


def case(expected: str):
    def add(fn: Callable[[Path], list]) -> Callable[[Path], list]:
        CASES[fn.__name__] = (fn, expected)
        return fn
    return add


@case("error: TMP/s.json: inputs.row.columns.logits: expected a column name other than the model's outputs "
      "(logits), received 'logits': the exported model takes one input per column, named as the column (rename "
      "the column, in the spec and the CSV header, or the output: its layer's id or [outputs])")
def train_a_column_named_like_the_output(tmp):
    """On main: every epoch trained, then the final export failed (no model.onnx)."""
    return ["train", _spec(tmp, {"row": {"columns": {"mass": "numeric", "logits": "numeric"}}}), "--out",
            tmp / "run", "--device", "cpu", "--quiet"]


@case("error: TMP/s.json: inputs.row.columns.score: expected a column name other than the model's outputs "
      "(logits, score), received 'score': the exported model takes one input per column, named as the column "
      "(rename the column, in the spec and the CSV header, or the output: its layer's id or [outputs])")
def validate_a_column_named_like_one_of_several_outputs(tmp):
    layers = [{"id": "hidden", "op": "linear", "out_features": 4, "act": "relu"},
              {"id": "score", "op": "linear", "out_features": 1, "from": "hidden"},
              {"id": "logits", "op": "linear", "out_features": 2, "from": "hidden"}]
    return ["validate", _spec(tmp, {"row": {"columns": {"mass": "numeric", "score": "numeric"}}}, layers,
                              outputs=["logits", "score"])]


@case("error: TMP/s.json: inputs.row.columns.extra: expected a column name other than the model's other inputs, "
      "received 'extra', the name of input 'extra': the exported model takes one input per column beside them "
      "(rename the input, or the column in the spec and the CSV header)")
def validate_a_column_named_like_another_input(tmp):
    layers = [{"id": "a", "op": "linear", "out_features": 2, "from": "row"},
              {"id": "b", "op": "linear", "out_features": 2, "from": "extra"},
              {"id": "logits", "op": "add", "from": ["a", "b"]}]
    return ["validate", _spec(tmp, {"row": {"columns": {"mass": "numeric", "extra": "numeric"}},
                                    "extra": {"shape": [3]}}, layers)]


@case("error: TMP/s.json: inputs.right.columns.mass: expected a column name other than the columns of input "
      "'left', received 'mass', declared there too: the exported model takes one input per column (rename one "
      "of them, in the spec and the CSV header)")
def validate_one_column_in_two_tabular_inputs(tmp):
    layers = [{"id": "a", "op": "linear", "out_features": 2, "from": "left"},
              {"id": "b", "op": "linear", "out_features": 2, "from": "right"},
              {"id": "logits", "op": "add", "from": ["a", "b"]}]
    return ["validate", _spec(tmp, {"left": {"columns": {"mass": "numeric"}},
                                    "right": {"columns": {"mass": "numeric", "year": "numeric"}}}, layers)]


@case("error: TMP/s.json: inputs.row.columns.archc_row/encoded: expected a column name that does not start with "
      "'archc_row/' (the exported model's preprocessing values are named archc_row/<column>/<step>), received "
      "'archc_row/encoded'")
def validate_a_column_in_the_preprocessing_namespace(tmp):
    return ["validate", _spec(tmp, {"row": {"columns": {"mass": "numeric", "archc_row/encoded": "numeric"}}})]


@case("error: TMP/s.json: outputs[1]: expected each output once, received 'logits' again (outputs[0]) (remove the "
      "repeated name)")
def validate_an_output_listed_twice(tmp):
    """On main: one ONNX output, the second name dropped without a word."""
    return ["validate", _spec(tmp, {"row": {"columns": {"mass": "numeric"}}}, outputs=["logits", "logits"])]


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_line_of_stderr_and_exit_code(name, tmp_path):
    fn, expected = CASES[name]
    r = CliRunner().invoke(main, [str(a) for a in fn(tmp_path)])
    first = (r.stderr.splitlines()[0] if r.stderr else "").replace(str(tmp_path), "TMP")
    assert (r.exit_code, first) == (1, expected), r.output
    assert not (tmp_path / "run").exists()  # nothing trained, no folder claimed
