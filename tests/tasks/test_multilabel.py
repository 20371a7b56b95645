"""multilabel, the kind added as one module: its loss and metric against torch, its rule, its scoring and records."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from archc.errors import DataError, SpecError
from archc.pipeline import compile_spec
from archc.runtime import Model, records, table
from archc.runtime.evaluate import score
from archc.tasks import objective_for


def spec(**extra) -> dict:
    return {"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [5]}},
            "task": {"kind": "multilabel", "labels": ["a", "b", "c"]},
            "layers": [{"op": "linear", "out_features": 3}]} | extra


def identity_model(tmp_path: Path) -> Model:
    """x [batch, 3] -> y = x, labelled as a multilabel model's logits."""
    shape = ["batch", 3]
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    meta = {"archc.task": {"kind": "multilabel", "labels": ["a", "b", "c"]},
            "archc.outputs": {"y": {"shape": shape, "dtype": "float32", "kind": "logits"}}}
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=json.dumps(v))
    onnx.save(m, str(tmp_path / "m.onnx"))
    return Model.open(tmp_path / "m.onnx", device="cpu")


def test_loss_and_metric_match_torch():
    import torch
    import torch.nn.functional as F

    c = compile_spec(spec())
    obj = objective_for(c.spec, c.graph)
    out, y = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, -0.2]]), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    want = F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(dim=1).sum()
    assert obj.loss(out, y).item() == pytest.approx(want.item())
    assert obj.metric_sum(out, y).item() == pytest.approx(2 / 3 + 2 / 3)   # one wrong call in each row


@pytest.mark.parametrize("change, message", [
    ({"layers": [{"op": "linear", "out_features": 3, "act": "softmax"}]}, "expects logits from output"),
    ({"inputs": {"x": {"shape": ["seq", 5]}}}, r"shaped \[batch, labels\]"),
    ({"train": {"loss": "cross_entropy"}}, "expected a loss for multilabel"),
])
def test_validate_rejects_what_training_cannot_use(change, message):
    with pytest.raises(SpecError, match=message):
        compile_spec(spec(**change))


def test_infer_scores_per_label_and_shows_labels_over_a_half(tmp_path):
    m = identity_model(tmp_path)
    logits = np.array([[3.0, -2.0, 1.0], [-1.0, -1.0, -1.0], [0.2, 4.0, -3.0]], np.float32)
    y = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]], np.float32)
    outputs = m.run({"x": logits})
    recs = records(m, outputs)
    assert [r["labels"] for r in recs] == [["a", "c"], [], ["a", "b"]]
    assert recs[0]["probabilities"] == pytest.approx([1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-1.0))])
    lines = table(m, outputs).splitlines()
    assert lines[0].split() == ["#", "labels", "probabilities"] and lines[3].split()[:2] == ["1", "-"]
    s = score(m, outputs, y)
    assert s["label_accuracy"] == pytest.approx(8 / 9) and s["exact_match"] == pytest.approx(2 / 3)
    assert s["accuracy[c]"] == pytest.approx(2 / 3) and s["f1[c]"] == 0.0 and s["f1[a]"] == 1.0


def test_targets_must_be_zero_one_rows(tmp_path):
    from archc.data import load

    c = compile_spec(spec())
    obj = objective_for(c.spec, c.graph)
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 5), np.float32), y=np.full((20, 3), 2.0, np.float32))
    with pytest.raises(DataError, match="expected 0/1 targets"):
        obj.check(load(f"npz:{tmp_path / 'd.npz'}", task="regression"))
    np.savez(tmp_path / "e.npz", x=np.zeros((20, 5), np.float32), y=np.zeros(20, np.float32))
    with pytest.raises(DataError, match=r"expected targets \[examples, 3\]"):
        obj.check(load(f"npz:{tmp_path / 'e.npz'}", task="regression"))
