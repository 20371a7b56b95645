"""NaN and inf: refused as inputs (count and first position), null in every JSON archc prints (issue 11, item 4)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from archc import strict_json
from archc.cli import main
from archc.errors import InputError
from archc.runtime import Model
from archc.train.run_dir import RunResult

F32 = TensorProto.FLOAT


def _save_sqrt(tmp_path: Path, shape: list) -> Path:
    import onnx

    m = {"archc.task": {"kind": "regression"},
         "archc.inputs": {"x": {"shape": shape, "dtype": "float32"}},
         "archc.outputs": {"y": {"shape": shape, "dtype": "float32", "kind": "values"}}}
    graph = helper.make_graph([helper.make_node("Sqrt", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", F32, shape)],
                              [helper.make_tensor_value_info("y", F32, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for k, v in m.items():
        model.metadata_props.add(key=k, value=json.dumps(v))
    onnx.save(model, str(tmp_path / "sqrt.onnx"))
    return tmp_path / "sqrt.onnx"


def test_nonfinite_input_is_refused_with_count_and_first_position(tmp_path):
    m = Model.open(_save_sqrt(tmp_path, ["batch", 3]), device="cpu")
    x = np.ones((4, 3), dtype=np.float32)
    x[2, 1], x[3, 0] = np.nan, np.inf
    with pytest.raises(InputError, match=r"input 'x': expected finite numbers, received 2 NaN or inf value\(s\), "
                                         r"the first at example 2, feature 1"):
        m.run({"x": x})
    m.run({"x": np.ones((4, 3), dtype=np.float32)})  # the same signature passes once: values still checked
    with pytest.raises(InputError, match="received 2 NaN or inf"):
        m.run({"x": x})
    ok = Model.open(tmp_path / "sqrt.onnx", device="cpu", allow_nonfinite=True)
    assert np.isnan(ok.run({"x": x})["y"][2, 1])


def test_position_past_rank_two(tmp_path):
    m = Model.open(_save_sqrt(tmp_path, ["batch", 2, 2]), device="cpu")
    x = np.zeros((2, 2, 2), dtype=np.float32)
    x[1, 0, 1] = -np.inf
    with pytest.raises(InputError, match=r"received 1 NaN or inf value\(s\), the first at example 1, feature \(0, 1\)"):
        m.run({"x": x})


def test_infer_cli_refuses_nan_input_exit_1(tmp_path):
    model = _save_sqrt(tmp_path, ["batch", 3])
    (tmp_path / "in.csv").write_text("1,2,3\n4,nan,6\n")
    r = CliRunner().invoke(main, ["infer", str(model), "--input", str(tmp_path / "in.csv")])
    assert r.exit_code == 1, r.output
    assert "input 'x': expected finite numbers, received 1 NaN or inf value(s), the first at example 1, feature 1" \
        in r.output
    assert "Traceback" not in r.output


def test_infer_json_is_strict_json(tmp_path):
    """A NaN output (sqrt of a negative) prints as null, not the NaN no JSON parser accepts."""
    model = _save_sqrt(tmp_path, ["batch", 3])
    np.save(tmp_path / "in.npy", np.array([[4, -1, 9]], dtype=np.float32))
    r = CliRunner().invoke(main, ["infer", str(model), "--input", str(tmp_path / "in.npy"), "--json"])
    assert r.exit_code == 0, r.output
    records = json.loads(r.output, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert json.dumps(records).count("null") == 1


def test_strict_json_maps_nonfinite_to_null():
    value = {"a": float("nan"), "b": [np.float32("inf"), np.array([1.0, -np.inf])], "c": 2, "d": "nan"}
    assert json.loads(strict_json.dumps(value)) == {"a": None, "b": [None, [1.0, None]], "c": 2, "d": "nan"}
    result = RunResult("run", "accuracy", 1, 1, {"val_loss": float("nan")}, {}, {}, False, 0.1, {})
    assert json.loads(result.to_json(), parse_constant=lambda c: pytest.fail(c))["best"]["val_loss"] is None
