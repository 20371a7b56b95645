"""archc.runtime.session: providers, opening, signatures, checks, runs — on tiny onnx.helper models."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from archc.errors import InputError, ModelError
from archc.runtime import Model, TensorSig, choose_providers, cuda_available

F32, I64 = TensorProto.FLOAT, TensorProto.INT64
W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
B = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def save(path: Path, nodes, inputs, outputs, inits=(), meta: dict | None = None) -> Path:
    """Write a small ONNX model, with archc metadata when given."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))
    onnx.save(model, str(path))
    return path


def classifier(tmp_path: Path, meta: bool = True) -> Path:
    """x [batch, 4] float32 → logits [batch, 3] = x @ W + B."""
    m = {"archc.version": "0.1.0", "archc.task": {"kind": "classification", "labels": ["cat", "dog", "bird"]},
         "archc.inputs": {"x": {"shape": ["batch", 4], "dtype": "float32"}},
         "archc.outputs": {"logits": {"shape": ["batch", 3], "dtype": "float32", "kind": "logits"}}}
    return save(tmp_path / "clf.onnx",
                [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["logits"])],
                [helper.make_tensor_value_info("x", F32, ["batch", 4])],
                [helper.make_tensor_value_info("logits", F32, ["batch", 3])],
                [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")], m if meta else None)


def two_inputs(tmp_path: Path) -> Path:
    """a, b [batch, 2] float32 → total = a + b (regression)."""
    m = {"archc.task": {"kind": "regression"},
         "archc.inputs": {"a": {"shape": ["batch", 2], "dtype": "float32"},
                          "b": {"shape": ["batch", 2], "dtype": "float32"}},
         "archc.outputs": {"total": {"shape": ["batch", 2], "dtype": "float32", "kind": "values"}}}
    return save(tmp_path / "two.onnx", [helper.make_node("Add", ["a", "b"], ["total"])],
                [helper.make_tensor_value_info(n, F32, ["batch", 2]) for n in "ab"],
                [helper.make_tensor_value_info("total", F32, ["batch", 2])], meta=m)


def int_model(tmp_path: Path) -> Path:
    """ids [batch, 3] int64 → ids (no metadata)."""
    return save(tmp_path / "ids.onnx", [helper.make_node("Identity", ["ids"], ["out"])],
                [helper.make_tensor_value_info("ids", I64, ["batch", 3])],
                [helper.make_tensor_value_info("out", I64, ["batch", 3])])


def image_model(tmp_path: Path, preprocess) -> Path:
    """img [batch, 2, 2, 2] float32 → same values, with a preprocess entry."""
    m = {"archc.task": {"kind": "regression"},
         "archc.inputs": {"img": {"shape": ["batch", 2, 2, 2], "dtype": "float32"}},
         "archc.outputs": {"y": {"shape": ["batch", 2, 2, 2], "dtype": "float32", "kind": "values"}},
         "archc.preprocess": {"img": preprocess}}
    return save(tmp_path / "img.onnx", [helper.make_node("Identity", ["img"], ["y"])],
                [helper.make_tensor_value_info("img", F32, ["batch", 2, 2, 2])],
                [helper.make_tensor_value_info("y", F32, ["batch", 2, 2, 2])], meta=m)


def test_providers_on_cpu_machine():
    assert cuda_available() is False
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(InputError, match="cuda"):
        choose_providers("cuda")
    with pytest.raises(InputError, match="expected one of auto, cpu, cuda, received 'tpu'"):
        choose_providers("tpu")


def test_open_reads_signature_and_metadata(tmp_path):
    m = Model.open(classifier(tmp_path))
    assert m.inputs == {"x": TensorSig("x", ("batch", 4), "float32")}
    assert m.outputs["logits"] == TensorSig("logits", ("batch", 3), "float32", "logits")
    assert m.task == {"kind": "classification", "labels": ["cat", "dog", "bird"]}
    assert m.metadata["archc.version"] == "0.1.0"
    assert m.providers == ["CPUExecutionProvider"]


def test_foreign_model_uses_graph_signature(tmp_path):
    m = Model.open(classifier(tmp_path, meta=False))
    assert m.task is None and m.metadata == {}
    assert m.inputs["x"].shape == ("batch", 4) and m.inputs["x"].dtype == "float32"
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(m.run({"x": x})["logits"], x @ W + B, rtol=1e-6)


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all \x00\x01\x02", b"\x08\x07\x12"])
def test_corrupt_model_is_model_error(tmp_path, content):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelError, match="expected a valid ONNX model"):
        Model.open(p)


def test_missing_model_and_directory(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Model.open(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="directory"):
        Model.open(tmp_path)


def test_bad_metadata_json_is_model_error(tmp_path):
    p = save(tmp_path / "m.onnx", [helper.make_node("Identity", ["x"], ["y"])],
             [helper.make_tensor_value_info("x", F32, ["batch", 2])],
             [helper.make_tensor_value_info("y", F32, ["batch", 2])], meta={"archc.task": "{not json"})
    with pytest.raises(ModelError, match="archc.task"):
        Model.open(p)


def test_deeply_nested_metadata_json_is_model_error(tmp_path):
    p = save(tmp_path / "m.onnx", [helper.make_node("Identity", ["x"], ["y"])],
             [helper.make_tensor_value_info("x", F32, ["batch", 2])],
             [helper.make_tensor_value_info("y", F32, ["batch", 2])], meta={"archc.task": "[" * 100_000})
    with pytest.raises(ModelError, match="archc.task': expected JSON of reasonable nesting depth"):
        Model.open(p)


def test_shape_mismatch_message(tmp_path):
    m = Model.open(classifier(tmp_path))
    with pytest.raises(InputError) as e:
        m.check({"x": np.zeros((4, 5), np.float64)})
    assert "input 'x': expected shape [batch, 4] float32, received [4, 5] float64" in str(e.value)
    with pytest.raises(InputError, match=r"received \[2, 2, 4\] float32"):
        m.check({"x": np.zeros((2, 2, 4), np.float32)})


def test_names_missing_and_unknown(tmp_path):
    m = Model.open(two_inputs(tmp_path))
    with pytest.raises(InputError) as e:
        m.check({"a": np.zeros((1, 2)), "c": np.zeros((1, 2))})
    assert "expected inputs 'a', 'b'" in str(e.value)
    assert "missing 'b'" in str(e.value) and "unknown 'c'" in str(e.value)


def test_batch_axis_must_agree_across_inputs(tmp_path):
    m = Model.open(two_inputs(tmp_path))
    with pytest.raises(InputError, match="expected axis 'batch' = 2 .* received 3"):
        m.check({"a": np.zeros((2, 2)), "b": np.zeros((3, 2))})


def test_missing_batch_axis_added(tmp_path):
    m = Model.open(classifier(tmp_path))
    fed = m.check({"x": [1.0, 2.0, 3.0, 4.0]})
    assert fed["x"].shape == (1, 4) and fed["x"].dtype == np.float32
    assert m.run({"x": [1, 2, 3, 4]})["logits"].shape == (1, 3)


def test_dtype_casts(tmp_path):
    m = Model.open(classifier(tmp_path))
    for dt in (np.float64, np.float16, np.int32, np.int64):
        assert m.check({"x": np.ones((2, 4), dt)})["x"].dtype == np.float32
    ids = Model.open(int_model(tmp_path))
    assert ids.check({"ids": np.ones((2, 3), np.int32)})["ids"].dtype == np.int64
    out = ids.run({"ids": np.array([[1, 2, 3]], np.int32)})["out"]
    assert out.dtype == np.int64 and out.tolist() == [[1, 2, 3]]


def test_float_to_int_refused(tmp_path):
    m = Model.open(int_model(tmp_path))
    with pytest.raises(InputError) as e:
        m.check({"ids": np.ones((2, 3), np.float32)})
    assert "expected shape [batch, 3] int64, received [2, 3] float32" in str(e.value)
    assert "refusing" in str(e.value)


def test_non_numeric_and_ragged(tmp_path):
    m = Model.open(classifier(tmp_path))
    with pytest.raises(InputError, match="non-numeric"):
        m.check({"x": [["a", "b", "c", "d"]]})
    with pytest.raises(InputError, match="ragged"):
        m.check({"x": [[1, 2, 3, 4], [1, 2]]})


def test_chunked_equals_unchunked(tmp_path):
    m = Model.open(classifier(tmp_path))
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    whole = m.run({"x": x})["logits"]
    for bs in (1, 3, 10, 64):
        np.testing.assert_array_equal(m.run({"x": x}, batch_size=bs)["logits"], whole)
    np.testing.assert_allclose(whole, x @ W + B, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="positive"):
        m.run({"x": x}, batch_size=0)


def test_preprocess_per_channel_and_scalar(tmp_path):
    x = np.random.default_rng(1).random((3, 2, 2, 2)).astype(np.float32)
    x0 = x.copy()
    m = Model.open(image_model(tmp_path, {"mean": [1.0, 2.0], "std": [2.0, 4.0]}))
    want = (x - np.array([1, 2], np.float32)[:, None, None]) / np.array([2, 4], np.float32)[:, None, None]
    np.testing.assert_allclose(m.run({"img": x})["y"], want, rtol=1e-6)
    assert np.array_equal(x, x0)  # the caller's array is untouched
    m2 = Model.open(image_model(tmp_path, {"mean": 0.5, "std": 0.25}))
    np.testing.assert_allclose(m2.run({"img": x})["y"], (x - 0.5) / 0.25, rtol=1e-6)


def test_no_torch_import(tmp_path):
    path = classifier(tmp_path)
    code = (
        "import sys, numpy as np\n"
        "import archc.runtime as rt\n"
        f"m = rt.Model.open({str(path)!r})\n"
        "out = m.run({'x': np.ones((2, 4), np.float32)}, batch_size=1)\n"
        "print(rt.table(m, out)); rt.records(m, out)\n"
        "assert 'torch' not in sys.modules, sorted(k for k in sys.modules if 'torch' in k)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert "cat" in r.stdout or "bird" in r.stdout or "dog" in r.stdout
    assert r.stderr == ""  # nothing printed about providers on a CPU-only machine
