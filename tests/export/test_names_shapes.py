"""The exported file shows the spec: node names from spec ids, initializers named as the state_dict, archc's
inferred shapes as value_info (checked against ONNX Runtime's actual intermediate shapes), and weights past the
external-data threshold in a side file that `archc infer` runs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import archc.export.onnx as export_onnx
import archc.graph.bounds as graph_bounds
from archc.cli import main
from archc.export import export
from archc.export.onnx import example_inputs
from archc.lower import lower
from archc.pipeline import compile_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"

# two uses of one block, repeated, with `act` sugar and an escaped id (`training` is a torch attribute)
BLOCKS = {
    "archc": 1, "model": {"name": "blocks"}, "task": {"kind": "regression"},
    "inputs": {"x": {"shape": ["seq", 8]}}, "axes": {"seq": 6},
    "blocks": {"mlp": {"params": {"w": 8}, "layers": [
        {"id": "fc1", "op": "linear", "out_features": "$w", "act": "relu"},
        {"id": "norm", "op": "layernorm"},
        {"id": "training", "op": "linear", "out_features": 8},
        {"id": "res", "op": "add", "from": ["x", "training"]}]}},
    "layers": [{"id": "layer1", "use": "mlp", "repeat": 2},
               {"id": "layer2", "use": "mlp", "with": {"w": 16}, "repeat": 2},
               {"id": "head", "op": "linear", "out_features": 3}],
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    compiled = compile_spec(BLOCKS)
    module = lower(compiled.graph, seed=0)
    report = export(compiled, tmp_path_factory.mktemp("m") / "m.onnx", module=module)
    return compiled, module, report, onnx.load(report.path)


def test_node_names_carry_the_spec_path(exported):
    compiled, _, _, model = exported
    names = [n.name for n in model.graph.node]
    for nid in ("layer1.0.fc1", "layer1.1.training", "layer2.1.norm", "layer2.0.res", "head"):
        assert any(n == nid or n.startswith(nid + "/") for n in names), (nid, names)
    assert all(n.name.split("/")[0] in {node.id for node in compiled.graph.nodes} for n in model.graph.node)
    assert len(set(names)) == len(names)


def test_initializers_are_named_as_the_state_dict(exported):
    _, module, _, model = exported
    state = module.state_dict()
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert set(inits) == set(state)  # each parameter once, fresh ones equal in value included
    for name, value in inits.items():
        np.testing.assert_array_equal(value, state[name].numpy())
    assert [i.name for i in model.graph.input] == ["x"]


def test_value_info_holds_archc_shapes_and_passes_the_full_checker(exported):
    compiled, _, report, model = exported
    info = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in model.graph.value_info}
    graph = compiled.graph
    for node in graph.nodes:
        if node.id in graph.outputs.values():
            continue
        assert info[node.id] == list(node.out.shape), node.id
    assert info["layer2.1.fc1"] == ["batch", "seq", 16]  # symbolic axes named as in the spec
    onnx.checker.check_model(report.path, full_check=True)


@pytest.mark.parametrize("spec", [BLOCKS, SPECS / "residual_cnn.toml", SPECS / "transformer_block_demo.toml"])
def test_value_info_shapes_are_onnx_runtimes(spec, tmp_path):
    """Every value_info entry, made an extra graph output, has exactly that shape when ONNX Runtime runs."""
    compiled = compile_spec(spec)
    report = export(compiled, tmp_path / "m.onnx", module=lower(compiled.graph, seed=0))
    model = onnx.load(report.path)
    assert len(model.graph.value_info) >= len(compiled.graph.nodes) // 2
    model.graph.output.extend(model.graph.value_info)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    sizes = {k: v + 2 for k, v in compiled.graph.sizes.items()}
    got = sess.run(None, example_inputs(compiled.graph, 3, sizes))
    for value, array in zip(sess.get_outputs(), got):
        declared = next((v for v in model.graph.value_info if v.name == value.name), None)
        if declared is None:
            continue
        dims = [3 if d.dim_param == "batch" else sizes[d.dim_param] if d.dim_param else d.dim_value
                for d in declared.type.tensor_type.shape.dim]
        assert list(array.shape) == dims, value.name


def test_weights_past_the_threshold_go_to_a_side_file_that_infer_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(export_onnx, "EXTERNAL_DATA_BYTES", 4096)  # the 2 GB rule, without 2 GB
    compiled = compile_spec(SPECS / "digit_classifier.toml")
    report = export(compiled, tmp_path / "m.onnx", module=lower(compiled.graph, seed=0))
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]  # nothing temporary left
    assert report.data_path == str(tmp_path / "m.onnx.data") and report.max_abs_diff <= report.tolerance
    assert os.path.getsize(tmp_path / "m.onnx") < 100_000 < os.path.getsize(tmp_path / "m.onnx.data")
    model = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    big = [t for t in model.graph.initializer if np.prod(t.dims) * 4 >= 1024]  # small ones may stay inline
    assert big and all(t.data_location == onnx.TensorProto.EXTERNAL for t in big)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(main, ["infer", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy"),
                                  "--output", str(tmp_path / "out.npy")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "out.npy").shape == (4, 10)
    # a later export under the threshold replaces both: no stale side file stays beside the model
    monkeypatch.setattr(export_onnx, "EXTERNAL_DATA_BYTES", 2**40)
    export(compiled, tmp_path / "m.onnx", module=lower(compiled.graph, seed=0))
    assert {"m.onnx.data"}.isdisjoint(os.listdir(tmp_path))


def test_a_failed_check_leaves_neither_file(tmp_path, monkeypatch):
    monkeypatch.setattr(export_onnx, "EXTERNAL_DATA_BYTES", 4096)
    monkeypatch.setattr(export_onnx, "ATOL", -1.0)  # no difference passes
    monkeypatch.setattr(export_onnx, "RTOL", 0.0)
    compiled = compile_spec(SPECS / "digit_classifier.toml")
    with pytest.raises(Exception, match="expected ONNX Runtime to match torch"):
        export(compiled, tmp_path / "m.onnx", module=lower(compiled.graph, seed=0))
    assert os.listdir(tmp_path) == []


def test_costly_parity_checks_run_at_shorter_axes_other_than_the_traced(tmp_path, monkeypatch):
    """Past PARITY_FLOPS the symbolic axes shrink; two batch sizes, the tolerance and 'not the traced size' stay."""
    import torch

    compiled = compile_spec(SPECS / "transformer_block_demo.toml")  # traced at seq 64
    monkeypatch.setattr(graph_bounds, "PARITY_FLOPS", compiled.graph.total_flops)  # 4x over budget
    threads = torch.get_num_threads()
    report = export(compiled, tmp_path / "m.onnx", module=lower(compiled.graph, seed=0))
    seqs = [c["sizes"]["seq"] for c in report.checks]
    assert sorted({c["batch"] for c in report.checks}) == [1, 3]
    assert len(set(seqs)) == 2 and 64 not in seqs and max(seqs) <= 64 // 4 + 1, seqs
    assert report.max_abs_diff <= report.tolerance
    assert torch.get_num_threads() == threads  # the export's one-thread torch is restored
