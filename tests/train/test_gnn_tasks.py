"""Node and graph classification end to end: whole-graph training, ONNX against torch, `archc infer` on graphs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import archc.train as train
from archc.cli import main
from archc.data import load
from archc.data.gnn import feeds_for, input_roles
from archc.errors import DataError, SpecError
from archc.lower import lower
from archc.pipeline import compile_spec
from archc.runtime import Model

GRAPH_INPUTS = {"x": {"shape": ["nodes", 34], "batched": False},
                "edge_index": {"shape": [2, "edges"], "dtype": "int64", "vocab": "nodes", "batched": False}}


def gcn_spec(**data) -> dict:
    """A small two-layer GCN for the karate club (full batch, 12 epochs)."""
    return {"archc": 1, "model": {"name": "tiny-gcn"}, "inputs": GRAPH_INPUTS,
            "axes": {"nodes": 34, "edges": 156},
            "task": {"kind": "node_classification", "labels": ["Mr. Hi", "Officer"]},  # the club names in the data
            "layers": [{"id": "gcn1", "op": "gcn_conv", "from": ["x", "edge_index"], "out_features": 8, "act": "relu"},
                       {"id": "logits", "op": "gcn_conv", "from": ["gcn1", "edge_index"], "out_features": 2}],
            "train": {"epochs": 12, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.05}, "monitor": "loss"},
            "data": {"source": "graph:karate", "val_fraction": 0.2, "test_fraction": 0.2} | data}


def pool_spec(features: int = 7) -> dict:
    return {"archc": 1, "model": {"name": "tiny-pool"},
            "inputs": {"x": {"shape": ["nodes", features], "batched": False},
                       "edge_index": GRAPH_INPUTS["edge_index"],
                       "batch": {"shape": ["nodes"], "dtype": "int64", "vocab": "graphs", "batched": False}},
            "axes": {"nodes": 60, "edges": 200, "graphs": 4}, "task": {"kind": "graph_classification"},
            "layers": [{"id": "gcn1", "op": "gcn_conv", "from": ["x", "edge_index"], "out_features": 16, "act": "relu"},
                       {"op": "global_mean_pool", "from": ["gcn1", "batch"]},
                       {"id": "logits", "op": "linear", "out_features": 2}],
            "train": {"epochs": 3, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 1e-2}},
            "data": {"source": "graph:synthetic?graphs=40", "val_fraction": 0.2, "test_fraction": 0.2}}


@pytest.fixture(scope="module")
def karate_run(tmp_path_factory):
    """The small GCN trained once on the karate club: (run folder, result)."""
    out = tmp_path_factory.mktemp("karate") / "gcn"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the autouse one_thread fixture does for each test
    try:
        return out, train.run(gcn_spec(), out=out, quiet=True)
    finally:
        torch.set_num_threads(before)


def test_gcn_on_karate_trains_and_onnx_matches_torch(karate_run):
    out, result = karate_run
    assert result.metric == "accuracy" and result.test["examples"] == 16 and result.test["accuracy"] > 0.6
    d = load("graph:karate", task="node_classification", val_fraction=0.2, test_fraction=0.2)
    model = Model.open(out / "model.onnx", device="cpu")
    assert json.loads(model.metadata["archc.task"])["kind"] == "node_classification"
    logits = model.run({"x": d.graphs.x, "edge_index": d.graphs.edge_index})["logits"]       # (34, 2)
    assert logits.shape == (34, 2)
    assert float(np.mean(logits[d.test.x].argmax(1) == d.test.y)) == result.test["accuracy"]
    compiled = compile_spec(gcn_spec())
    module = lower(compiled.graph).eval()
    module.load_state_dict(load_file(out / "best.safetensors"))
    with torch.no_grad():
        ref = module(torch.from_numpy(d.graphs.x), torch.from_numpy(d.graphs.edge_index)).numpy()
    assert np.allclose(ref, logits, atol=1e-5)


def test_graph_classifier_collates_graphs_and_infer_scores_the_held_out_graphs(tmp_path):
    out = tmp_path / "pool"
    result = train.run(pool_spec(), out=out, quiet=True)
    assert result.test["examples"] == 8 and len(result.final) > 0
    d = load("graph:synthetic?graphs=40", task="graph_classification", val_fraction=0.2, test_fraction=0.2)
    model = Model.open(out / "model.onnx", device="cpu")
    roles = input_roles({n: (s.shape, s.dtype) for n, s in model.inputs.items()})
    logits = model.run(feeds_for(d, d.test.x, roles))["logits"]                             # (8, 2)
    assert float(np.mean(logits.argmax(1) == d.test.y)) == pytest.approx(result.test["accuracy"])
    r = CliRunner().invoke(main, ["infer", str(out / "model.onnx"), "--input", "graph:synthetic?graphs=40",
                                  "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert len(got["records"]) == 8 and got["metrics"]["accuracy"] == pytest.approx(result.test["accuracy"])


def test_infer_on_a_node_classifier_with_an_npz_graph(karate_run, tmp_path):
    out = karate_run[0]
    d = load("graph:karate", task="node_classification")
    np.savez(tmp_path / "club.npz", x=d.graphs.x, edge_index=d.graphs.edge_index)
    r = CliRunner().invoke(main, ["infer", str(out / "model.onnx"), "--input", str(tmp_path / "club.npz"),
                                  "--output", str(tmp_path / "pred.json"), "--limit", "2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "34 example(s)" in r.output and "label" in r.output
    records = json.loads((tmp_path / "pred.json").read_text())
    assert len(records) == 34 and {rec["label"] for rec in records} <= {"Mr. Hi", "Officer"}
    r = CliRunner().invoke(main, ["infer", str(out / "model.onnx"), "--input", "graph:karate"],
                           catch_exceptions=False)
    assert r.exit_code == 0 and "graph:karate, test split, 16 of 34 nodes scored: accuracy" in r.output


@pytest.mark.parametrize("case, error, message", [
    ("digits", SpecError, "data.source: expected task .* received .node_classification."),  # found by validate
    ("features", DataError, r"expected node features \[nodes, 34\]"),
    ("normalize", SpecError, "expected normalize = false for node_classification"),
    ("no-batch", SpecError, "graph_classification expects a batch input"),
])
def test_graph_task_errors_before_training(tmp_path, case, error, message):
    spec = gcn_spec()
    if case == "digits":
        spec["data"]["source"] = "sklearn:digits"
    elif case == "features":
        spec = pool_spec(features=34)
        spec["data"]["source"] = "graph:synthetic?graphs=20"
    elif case == "normalize":
        spec["data"]["normalize"] = True
    else:
        spec["task"]["kind"] = "graph_classification"
    with pytest.raises(error, match=message):
        train.run(spec, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "train_state.safetensors").exists()
