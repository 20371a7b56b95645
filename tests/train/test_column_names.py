"""Column names and the exported model that takes a row: the names it cannot hold are validate errors
(tests/cli/test_golden_19_tabexport.py); every other name the spec or the export uses gives way. A column named
like its own input, like a layer that is no output, like a weight and like the `row.columns` embedding front
trains and exports, one ONNX input per column, parity passing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from archc.pipeline import compile_spec
from archc.train import run

NAMES = ["row", "hidden", "hidden.weight", "row.columns"]


def test_names_the_core_model_uses_give_way_to_columns(tmp_path: Path):
    rng = np.random.default_rng(0)
    lines = [",".join([*NAMES, "kind", "label"])]
    for i in range(80):
        x = rng.normal(size=4)
        lines.append(",".join([*(f"{v:.3f}" for v in x), "ab"[i % 2], "yes" if x[0] + x[1] > 0 else "no"]))
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    columns = {n: "numeric" for n in NAMES} | {"kind": {"type": "categorical", "max_categories": 2,
                                                        "encode": "embedding", "dim": 2}}
    spec = {"archc": 1, "model": {"name": "names"}, "inputs": {"row": {"columns": columns}},
            "task": {"kind": "classification"},
            "layers": [{"id": "hidden", "op": "linear", "out_features": 8, "act": "relu"},
                       {"id": "logits", "op": "linear", "out_features": 2}],
            "train": {"epochs": 1, "batch_size": 16},
            "data": {"source": f"csv:{tmp_path / 'rows.csv'}", "target": "label"}}
    assert "row.columns" in [n.id for n in compile_spec(spec).graph.nodes]  # the front node is there
    result = run(spec, out=tmp_path / "run", quiet=True, device="cpu")
    sess = ort.InferenceSession(result.paths["onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [*NAMES, "kind"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["archc.encoded_input"])["name"] == "row"
    feeds = {n: np.array([[0.5]]) for n in NAMES} | {"kind": np.array([["a"]], object)}
    assert np.isfinite(sess.run(None, feeds)[0]).all()
