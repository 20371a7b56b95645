"""archc.runtime.present: classification records/probabilities, value records, the text table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper

from archc.runtime import Model, records, table

F32 = TensorProto.FLOAT


def model(tmp_path: Path, task: dict | None, out_kind: str = "logits", classes: int = 3) -> Model:
    """x [batch, classes] → y = x (Identity), so tests choose the 'scores' directly."""
    shape = ["batch", classes]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", F32, shape)],
                              [helper.make_tensor_value_info("y", F32, shape)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    if task is not None:
        meta = {"archc.task": task, "archc.inputs": {"x": {"shape": shape, "dtype": "float32"}},
                "archc.outputs": {"y": {"shape": shape, "dtype": "float32", "kind": out_kind}}}
        for k, v in meta.items():
            m.metadata_props.add(key=k, value=json.dumps(v))
    path = tmp_path / f"m_{out_kind}_{classes}.onnx"
    onnx.save(m, str(path))
    return Model.open(path)


LOGITS = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 5.0], [1.0, 3.0, 1.0]], np.float32)


def test_classification_logits(tmp_path):
    m = model(tmp_path, {"kind": "classification", "labels": ["cat", "dog", "bird"]})
    recs = records(m, m.run({"x": LOGITS}))
    assert [r["label"] for r in recs] == ["cat", "bird", "dog"]
    assert [r["predicted_index"] for r in recs] == [0, 2, 1]
    e = np.exp(LOGITS - LOGITS.max(1, keepdims=True))
    np.testing.assert_allclose([r["probability"] for r in recs], (e / e.sum(1, keepdims=True)).max(1), rtol=1e-6)
    top = records(m, {"y": LOGITS}, top=3)
    for r in top:
        assert [t["label"] for t in r["top"]][0] == r["label"]
        assert sum(t["probability"] for t in r["top"]) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["probs", "log_probs"])
def test_classification_probs_and_log_probs(tmp_path, kind):
    p = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]], np.float32)
    m = model(tmp_path, {"kind": "classification", "labels": None}, out_kind=kind)
    recs = records(m, {"y": p if kind == "probs" else np.log(p)}, top=3)
    assert [r["label"] for r in recs] == ["1", "0"]  # no labels: the class index as a string
    assert [r["probability"] for r in recs] == pytest.approx([0.7, 0.5], rel=1e-6)
    for r in recs:
        assert sum(t["probability"] for t in r["top"]) == pytest.approx(1.0, rel=1e-6)


def test_regression_and_foreign_records(tmp_path):
    m = model(tmp_path, {"kind": "regression"}, out_kind="values", classes=1)
    assert records(m, {"y": np.array([[1.5], [2.5]], np.float32)}) == [{"y": 1.5}, {"y": 2.5}]
    f = model(tmp_path, None, classes=2)
    assert f.task is None
    assert records(f, {"y": np.array([[1, 2]], np.float32)}) == [{"y": [1.0, 2.0]}]
    # Outputs with no shared batch axis: one record of whole arrays.
    assert records(f, {"y": np.float32(3), "z": np.ones(2)}) == [{"y": 3.0, "z": [1.0, 1.0]}]


def test_table_classification_and_truncation(tmp_path):
    m = model(tmp_path, {"kind": "classification", "labels": ["cat", "dog", "bird"]})
    out = {"y": np.tile(LOGITS, (10, 1))}  # 30 rows
    text = table(m, out, limit=5)
    lines = text.splitlines()
    assert lines[0].split() == ["#", "label", "probability"]
    assert len(lines) == 2 + 5 + 1 and lines[-1] == "… 25 more rows"
    assert lines[2].split() == ["0", "cat", f"{records(m, out)[0]['probability']:.4f}"]
    assert len({len(line) for line in lines[1:-1]}) <= 2  # fixed-width columns
    assert len(table(m, out, limit=0).splitlines()) == 32


def test_table_values(tmp_path):
    f = model(tmp_path, None, classes=8)
    text = table(f, {"y": np.arange(16, dtype=np.float32).reshape(2, 8)})
    lines = text.splitlines()
    assert lines[0].split() == ["#", "y"]
    assert "[0, 1, 2, 3, 4, 5, … (+2)]" in lines[2]
    assert table(f, {"y": np.zeros((0, 8), np.float32)}) == "(no examples)"
