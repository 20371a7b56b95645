"""Optimized exports (archc.export.optimize): onnxslim's graph, checked against torch again, kept by graph criteria
(fewer compute nodes, no second copy of a weight) within a size budget; the decision in metadata archc.optimized;
--optimize/--no-optimize; the plain export whenever the optimizer fails.

Where a test needs the optimized graph kept whatever the criteria say of that spec, `force` fixes the verdict and
everything else runs against the real tools: onnxslim's graph, ONNX Runtime and torch."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import archc.export.onnx as export_onnx
import archc.export.optimize as optimize
from archc.cli import main
from archc.export import export
from archc.export.onnx import ATOL, RTOL, example_inputs
from archc.lower import lower
from archc.pipeline import compile_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"
GRU = {  # a recurrent family besides the LSTM spec: sequences of 6 steps, a GRU, the last step's features
    "archc": 1, "model": {"name": "gru-seq"}, "task": {"kind": "regression"},
    "inputs": {"x": {"shape": ["seq", 5]}}, "axes": {"seq": 6},
    "layers": [{"op": "gru", "hidden_size": 8}, {"op": "select", "dim": 1, "index": -1},
               {"op": "linear", "out_features": 2}],
}


@pytest.fixture
def force(monkeypatch):
    """Make the graph criteria keep the optimized graph (`True`) or not (`False`); the rest of the decision is real."""
    real = optimize.verdict

    def fixed(kept: bool) -> None:
        def verdict(plain, opt):
            d = real(plain, opt)
            d.kept, d.why = kept, "fewer nodes" if kept else "more weight bytes"
            return d
        monkeypatch.setattr(optimize, "verdict", verdict)
    return fixed


def meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def built(spec, path: Path, optimized: bool = True):
    compiled = compile_spec(spec)
    module = lower(compiled.graph, seed=0).eval()
    return compiled, module, export(compiled, path, module=module, optimize=optimized)


def assert_matches_torch(path: Path, compiled, module, batch: int, sizes: dict[str, int]) -> None:
    """The file on ONNX Runtime against the torch module, at the export's tolerance."""
    graph = compiled.graph
    feeds = example_inputs(graph, batch, sizes, seed=5)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(list(graph.outputs), feeds)
    with torch.no_grad():
        ref = module(*(torch.from_numpy(v) for v in feeds.values()))
    for r, g in zip([ref] if isinstance(ref, torch.Tensor) else ref, got):
        r = r.detach().numpy()
        assert r.shape == g.shape
        assert np.max(np.abs(r - g)) <= ATOL + RTOL * np.max(np.abs(r))


def signature(path: Path) -> list:
    model = onnx.load(str(path), load_external_data=False)
    return [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in [*model.graph.input, *model.graph.output]]


FAMILIES = [SPECS / "residual_cnn.toml", SPECS / "transformer_block_demo.toml", SPECS / "lstm_digits.toml", GRU,
            SPECS / "gcn_karate.toml", SPECS / "unet_ddpm_digits.toml"]


@pytest.mark.parametrize("spec", FAMILIES, ids=lambda s: s.stem if isinstance(s, Path) else s["model"]["name"])
def test_optimized_graph_is_written_where_kept_and_matches_torch(spec, tmp_path, force):
    force(True)
    compiled, module, report = built(spec, tmp_path / "opt.onnx")
    built(spec, tmp_path / "plain.onnx", optimized=False)
    d = report.optimized
    record = json.loads(meta(tmp_path / "opt.onnx")[optimize.META_KEY])
    assert record == {"tool": "onnxslim", "nodes_before": d.nodes_before, "nodes_after": d.nodes_after,
                      "kept": True, "why": "fewer nodes", "removed": d.removed, "bytes_before": d.bytes_before,
                      "bytes_after": d.bytes_after}
    assert sum(d.removed.values()) == d.nodes_before - d.nodes_after
    written = onnx.load(str(tmp_path / "opt.onnx"))
    plain_nodes = len(onnx.load(tmp_path / "plain.onnx").graph.node)
    assert len(written.graph.node) == d.nodes_after < d.nodes_before == plain_nodes
    onnx.checker.check_model(written, full_check=True)
    assert signature(tmp_path / "opt.onnx") == signature(tmp_path / "plain.onnx")  # dynamic axes, spec-named
    plain_meta = meta(tmp_path / "plain.onnx")
    assert {k: v for k, v in meta(tmp_path / "opt.onnx").items() if k != optimize.META_KEY} == plain_meta
    assert optimize.META_KEY not in plain_meta and report.max_abs_diff <= report.tolerance
    graph = compiled.graph
    for batch, sizes in export_onnx.check_sizes(graph)[0] + [(1, graph.sizes)]:
        assert_matches_torch(tmp_path / "opt.onnx", compiled, module, batch, sizes)


def test_batch_and_seq_stay_dynamic_after_optimization(tmp_path, force):
    force(True)
    compiled, module, report = built(SPECS / "gpt_stdlib.toml", tmp_path / "gpt.onnx")
    assert report.optimized.kept and signature(tmp_path / "gpt.onnx") == [
        ("tokens", ["batch", "seq"]), ("logits", ["batch", "seq", 256])]
    for batch, seq in ((2, 5), (5, 17), (1, 128)):
        assert_matches_torch(tmp_path / "gpt.onnx", compiled, module, batch, {"seq": seq})


def test_spec_names_and_value_info_survive(tmp_path, force):
    force(True)
    built(SPECS / "residual_cnn.toml", tmp_path / "opt.onnx")
    built(SPECS / "residual_cnn.toml", tmp_path / "plain.onnx", optimized=False)
    opt, plain = onnx.load(str(tmp_path / "opt.onnx")), onnx.load(str(tmp_path / "plain.onnx"))
    names = {n.name for n in plain.graph.node}
    assert all(n.name in names for n in opt.graph.node)  # spec ids (`stage1.0.conv1`), none invented
    typed = {v.name: v for v in plain.graph.value_info}
    assert opt.graph.value_info and all(typed[v.name] == v for v in opt.graph.value_info)
    produced = {o for n in opt.graph.node for o in n.output}
    assert {v.name for v in opt.graph.value_info} == produced & set(typed)


def test_not_kept_keeps_the_plain_graph_and_says_so(tmp_path, force):
    force(False)
    _, _, report = built(SPECS / "transformer_block_demo.toml", tmp_path / "m.onnx")
    _, _, plain = built(SPECS / "transformer_block_demo.toml", tmp_path / "plain.onnx", optimized=False)
    record = json.loads(meta(tmp_path / "m.onnx")[optimize.META_KEY])
    assert record["kept"] is False and record["why"] == "more weight bytes"
    assert record["nodes_after"] < record["nodes_before"]
    assert len(onnx.load(str(tmp_path / "m.onnx")).graph.node) == record["nodes_before"]
    assert report.optimized.line().startswith(f"optimized model (onnxslim): {record['nodes_before']} -> "
                                              f"{record['nodes_after']} nodes (-")
    assert report.optimized.line().endswith("): more weight bytes, the plain graph is kept")
    assert report.checks == plain.checks  # the plain graph's own parity figures


def test_the_criteria_read_the_graphs(tmp_path):
    """Kept: fewer compute nodes (BatchNormalization folded into Conv); not kept: only Constant nodes gone, or the
    constants grew (a weight stored twice)."""
    _, _, cnn = built(SPECS / "residual_cnn.toml", tmp_path / "cnn.onnx")
    d = cnn.optimized
    assert d.kept and d.why == "fewer nodes" and d.removed["BatchNormalization"] == 8
    plain = onnx.load(str(tmp_path / "cnn.onnx"))
    assert len(plain.graph.node) == d.nodes_after
    only_constants = onnx.ModelProto()
    only_constants.CopyFrom(plain)
    value = onnx.helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [1.0])
    only_constants.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["unused"], value=value))
    assert optimize.verdict(only_constants, plain).why == "no fewer compute nodes"
    twice = onnx.ModelProto()
    twice.CopyFrom(plain)
    del twice.graph.node[-1]
    big = max(plain.graph.initializer, key=lambda t: t.ByteSize())
    copy = twice.graph.initializer.add()
    copy.CopyFrom(big)
    copy.name = big.name + "_copy"
    assert optimize.verdict(plain, twice).why == "more weight bytes"
    assert optimize.verdict(plain, twice).removed == {plain.graph.node[-1].op_type: 1}


def test_the_budget_skips_before_running_the_tool(tmp_path, monkeypatch):
    """Past the stated budget (nodes, weight bytes) onnxslim never runs; --optimize runs it anyway."""
    import onnxslim

    real = onnxslim.slim
    monkeypatch.setattr(optimize, "MAX_WEIGHT_BYTES", 1000)
    monkeypatch.setattr(onnxslim, "slim", lambda *a, **k: pytest.fail("ran the optimizer past its budget"))
    r = CliRunner().invoke(main, ["build", str(SPECS / "residual_cnn.toml"), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert ("note: graph optimization of the model (onnxslim) was skipped: 0 MiB of weights exceed its memory "
            "budget of 0 MiB (--optimize runs it anyway); the plain export is kept") in r.output
    record = json.loads(meta(tmp_path / "m.onnx")[optimize.META_KEY])
    assert record["kept"] is False and record["why"].startswith("was skipped: ")
    monkeypatch.setattr(optimize, "MAX_WEIGHT_BYTES", 2**40)
    monkeypatch.setattr(optimize, "MAX_NODES", 10)
    r = CliRunner().invoke(main, ["build", str(SPECS / "residual_cnn.toml"), "-o", str(tmp_path / "n.onnx")])
    assert "was skipped: 35 nodes exceed its time budget of 10 (--optimize runs it anyway)" in r.output, r.output
    monkeypatch.setattr(onnxslim, "slim", real)
    r = CliRunner().invoke(main, ["build", str(SPECS / "residual_cnn.toml"), "-o", str(tmp_path / "o.onnx"),
                                  "--optimize"])
    assert r.exit_code == 0 and "optimized model (onnxslim): 35 -> 26 nodes" in r.output, r.output


def test_no_pairwise_constant_deduplication(tmp_path, monkeypatch):
    """onnxslim's weight tying compares every pair of same-shape constants (minutes at 20,000 nodes): skipped."""
    import onnxslim.core.optimization as passes

    monkeypatch.setattr(passes, "tie_weights", lambda graph: pytest.fail("ran the quadratic weight tying"))
    _, _, report = built(SPECS / "residual_cnn.toml", tmp_path / "m.onnx")
    assert report.optimized.kept


def test_nothing_to_simplify_is_not_checked_again(tmp_path, monkeypatch):
    calls = []
    real = export_onnx.parity
    monkeypatch.setattr(export_onnx, "parity", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, _, report = built(SPECS / "digits_mlp.toml", tmp_path / "m.onnx")  # Gemm + Relu: nothing to remove
    assert report.optimized.why == "no fewer compute nodes" and not report.optimized.kept and len(calls) == 1


def test_an_optimizer_that_raises_keeps_the_plain_export(tmp_path, monkeypatch):
    import onnxslim

    def boom(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(onnxslim, "slim", boom)
    r = CliRunner().invoke(main, ["build", str(SPECS / "two_branch.json"), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert ("note: graph optimization of the model (onnxslim) failed (RuntimeError: boom); the plain export is "
            "kept") in r.output
    record = json.loads(meta(tmp_path / "m.onnx")[optimize.META_KEY])
    assert record["kept"] is False and record["nodes_after"] is None
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_an_optimizer_that_corrupts_the_graph_keeps_the_plain_export(tmp_path, monkeypatch, force):
    """A wrong weight in the simplified graph: its parity check fails, so the plain graph is written."""
    import onnxslim

    real = onnxslim.slim

    def corrupt(model, *args, **kwargs):
        out = real(model, *args, **kwargs)
        weight = max(out.graph.initializer, key=lambda t: np.prod(t.dims))
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) + 1.0, weight.name))
        return out
    monkeypatch.setattr(onnxslim, "slim", corrupt)
    force(True)
    compiled, module, report = built(SPECS / "residual_cnn.toml", tmp_path / "m.onnx")
    d = report.optimized
    assert not d.kept and d.why.startswith("gave a graph that failed its check (ExportError: layers[5] (logits): "
                                           "output 'logits' at batch 1: expected ONNX Runtime to match torch")
    assert len(onnx.load(str(tmp_path / "m.onnx")).graph.node) == d.nodes_before
    assert_matches_torch(tmp_path / "m.onnx", compiled, module, 3, {})


def test_no_optimize_writes_the_plain_graph_without_a_record(tmp_path):
    r = CliRunner().invoke(main, ["build", str(SPECS / "transformer_block_demo.toml"), "-o",
                                  str(tmp_path / "m.onnx"), "--no-optimize"])
    assert r.exit_code == 0, r.output
    assert "optimized" not in r.output and "onnxslim" not in r.output
    assert optimize.META_KEY not in meta(tmp_path / "m.onnx")
    r = CliRunner().invoke(main, ["build", str(SPECS / "transformer_block_demo.toml"), "-o",
                                  str(tmp_path / "o.onnx")])
    plain = len(onnx.load(str(tmp_path / "m.onnx")).graph.node)  # the plain graph is what onnxslim starts from
    assert r.exit_code == 0 and f"optimized model (onnxslim): {plain} -> " in r.output, r.output
    assert optimize.META_KEY in meta(tmp_path / "o.onnx")


def test_train_and_export_take_no_optimize(tmp_path, force):
    force(True)
    spec = SPECS / "transformer_block_demo.toml"
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(spec), "--out", str(out), "--epochs", "1", "--no-optimize",
                                  "--data", "text:stdlib?max_bytes=20000"])
    assert r.exit_code == 0, r.output
    assert optimize.META_KEY not in meta(out / "model.onnx")
    r = CliRunner().invoke(main, ["export", str(out), "-o", str(tmp_path / "opt.onnx")])
    assert r.exit_code == 0 and "optimized model (onnxslim)" in r.output, r.output
    assert json.loads(meta(tmp_path / "opt.onnx")[optimize.META_KEY])["kept"] is True
    r = CliRunner().invoke(main, ["export", str(out), "-o", str(tmp_path / "plain.onnx"), "--no-optimize"])
    assert r.exit_code == 0 and optimize.META_KEY not in meta(tmp_path / "plain.onnx")


def test_weights_in_external_data_are_not_optimized(tmp_path, monkeypatch):
    monkeypatch.setattr(export_onnx, "EXTERNAL_DATA_BYTES", 4096)
    _, _, report = built(SPECS / "digit_classifier.toml", tmp_path / "m.onnx")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]
    record = json.loads(meta(tmp_path / "m.onnx")[optimize.META_KEY])
    assert record["kept"] is False and "external data" in record["why"] and report.optimized.why == record["why"]


def test_kv_cache_model_is_optimized_and_generates_the_same_text(tmp_path, force):
    from archc.runtime import Model, generate

    force(True)
    r = CliRunner().invoke(main, ["build", str(SPECS / "gpt_stdlib.toml"), "-o", str(tmp_path / "gpt.onnx")])
    assert r.exit_code == 0, r.output
    assert "optimized KV-cache model (onnxslim): " in r.output
    record = json.loads(meta(tmp_path / "gpt.kv.onnx")[optimize.META_KEY])
    assert record["kept"] is True
    assert len(onnx.load(str(tmp_path / "gpt.kv.onnx")).graph.node) == record["nodes_after"] < record["nodes_before"]
    assert json.loads(meta(tmp_path / "gpt.onnx")[optimize.META_KEY])["kept"] is True
    model = Model.open(tmp_path / "gpt.onnx", device="cpu")
    cached = generate(model, "def ", max_new_tokens=40, temperature=0)
    recomputed = generate(model, "def ", max_new_tokens=40, temperature=0, cache=False)
    assert cached.cached and not recomputed.cached and cached.text == recomputed.text


def test_quantize_runs_on_an_optimized_model(tmp_path, force):
    from archc import train
    from archc.export import quantize as q

    force(True)
    spec = SPECS / "residual_cnn.toml"
    x = np.random.default_rng(0).standard_normal((96, 1, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(96) % 10)
    train.run(spec, out=tmp_path / "run", epochs=1, batch_size=32, quiet=True, data=f"npz:{tmp_path / 'd.npz'}")
    model = tmp_path / "run" / "model.onnx"
    assert json.loads(meta(model)[optimize.META_KEY])["kept"] is True
    (report,) = q.quantize(model, ["int8-dynamic"], max_drop=100.0)
    assert Path(report.path).exists() and report.bytes_after < report.bytes_before


def test_a_model_that_takes_a_row_is_optimized_behind_its_preprocessing(tmp_path, force):
    """The network (core) is simplified and checked; the row's preprocessing goes in front of the graph kept."""
    from archc.data.columns import Column, fit
    from archc.export import tabular

    force(True)
    columns = [Column("bill", "numeric", missing="median"), Column("island", "categorical", max_categories=3)]
    table = fit("row", columns, {"bill": ["41.5", "38.0", "NA", "45.1"],
                                 "island": ["Dream", "Biscoe", "Dream", "Torgersen"]})
    spec = {"archc": 1, "model": {"name": "rows"}, "inputs": {"row": {"shape": [table.width()]}},
            "task": {"kind": "classification", "labels": ["a", "b"]},
            "layers": [{"op": "linear", "out_features": 8, "act": "relu"}, {"op": "rmsnorm"},
                       {"op": "linear", "out_features": 2}]}
    compiled = compile_spec(spec)
    module = lower(compiled.graph, seed=0).eval()
    report = export(compiled, tmp_path / "m.onnx", module=module, extra_metadata={"columns": table.to_json()},
                    optimize=True)
    core = export(compiled, tmp_path / "core.onnx", module=module)
    assert report.optimized.kept and report.row["columns"] == ["bill", "island"]
    assert json.loads(meta(tmp_path / "m.onnx")[optimize.META_KEY])["kept"] is True
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    cells = {"bill": ["40.0", "NA"], "island": ["Biscoe", "Torgersen"]}
    (got,) = sess.run(None, tabular.feeds(table, cells))
    (ref,) = ort.InferenceSession(str(tmp_path / "core.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"row": table.encode(cells)})
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert core.optimized is None
