"""The emitter (`--exporter emit`, the default): the emitted graph goes through the whole export (metadata, checker,
parity, restore), with the traced file's interface, without importing torch.onnx (which `--exporter torchscript`,
the fallback, still uses); a spec with an op that does not emit yet is refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner

from archc.cli import main
from archc.export import export
from archc.lower import lower
from archc.pipeline import compile_spec

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from click.testing import CliRunner
from archc.cli import main
r = CliRunner().invoke(main, ["build", {spec!r}, "-o", {out!r}] + {flags!r})
assert r.exit_code == 0, r.output
print(r.output)
print("torch.onnx imported:", "torch.onnx" in sys.modules)
"""


def _build(spec: Path, out: Path, flags: list[str]) -> str:
    """`archc build` in a fresh interpreter (so sys.modules says what the build imported); its output."""
    code = PROBE.format(spec=str(spec), out=str(out), flags=flags)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_build_emits_by_default_without_torch_onnx(tmp_path):
    out = tmp_path / "d.onnx"
    printed = _build(ROOT / "specs" / "digit_classifier.toml", out, [])  # optimize on, as by default
    assert "export (emit)" in printed and "parity vs torch at batch 1, 3" in printed
    assert "torch.onnx imported: False" in printed
    model = onnx.load(out)
    assert [o.name for o in model.graph.output] == ["logits"] and model.opset_import[0].version == 23
    assert {p.key for p in model.metadata_props} >= {"archc.spec", "archc.task", "archc.inputs", "archc.outputs"}
    assert [n.name for n in model.graph.node if n.op_type == "Gemm"] == ["fc1", "fc2", "logits"]


def test_a_decoder_builds_both_graphs_without_torch_onnx(tmp_path):
    """The KV-cache graph (model.kv.onnx) is emitted too: a decoder's default build imports no torch.onnx."""
    out = tmp_path / "lm.onnx"
    printed = _build(ROOT / "specs" / "transformer_block_demo.toml", out, [])
    assert "export (emit)" in printed and "prefill/decode steps match the full recompute" in printed
    assert "torch.onnx imported: False" in printed
    kv = onnx.load(tmp_path / "lm.kv.onnx")
    assert kv.opset_import[0].version == 23 and any(n.op_type == "Attention" for n in kv.graph.node)


def test_torchscript_is_the_fallback(tmp_path):
    out = tmp_path / "t.onnx"
    printed = _build(ROOT / "specs" / "digit_classifier.toml", out, ["--exporter", "torchscript", "--no-optimize"])
    assert "export (torchscript)" in printed and "torch.onnx imported: True" in printed
    model = onnx.load(out)
    assert [o.name for o in model.graph.output] == ["logits"] and model.opset_import[0].version == 18


def test_standardized_targets_are_restored_in_the_emitted_graph(tmp_path):
    spec = {"archc": 1, "model": {"name": "reg"}, "inputs": {"x": {"shape": [3]}}, "task": {"kind": "regression"},
            "layers": [{"op": "linear", "id": "y", "out_features": 2}]}
    c = compile_spec(spec)
    module = lower(c.graph)
    scale = {"y": {"mean": [10.0, -5.0], "std": [2.0, 0.5]}}
    report = export(c, tmp_path / "r.onnx", module=module, exporter="emit", extra_metadata={"target_scale": scale})
    assert report.max_abs_diff <= report.tolerance  # parity against the restored torch module
    model = onnx.load(tmp_path / "r.onnx")
    assert {"target_scale.mean", "target_scale.std"} <= {t.name for t in model.graph.initializer}
    x = np.zeros((1, 3), np.float32)
    got = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    bias = module.state_dict()["y.bias"].numpy()
    np.testing.assert_allclose(got[0], bias * [2.0, 0.5] + [10.0, -5.0], rtol=1e-6)


def test_an_op_that_does_not_emit_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr("archc.emit.graph.NOT_EMITTING", frozenset({"gru"}))  # the list's ops, for the test
    spec = tmp_path / "r.toml"
    spec.write_text('archc = 1\n[model]\nname = "r"\n[inputs.x]\nshape = ["seq", 3]\n[axes]\nseq = 4\n'
                    '[task]\nkind = "regression"\n[[layers]]\nid = "r"\nop = "gru"\nhidden_size = 4\n')
    r = CliRunner().invoke(main, ["build", str(spec), "--exporter", "emit", "-o", str(tmp_path / "r.onnx")])
    assert r.exit_code == 1, r.output
    assert "layers[0] (r)" in r.output and "received gru (not yet emitting)" in r.output
    assert "--exporter torchscript" in r.output and not (tmp_path / "r.onnx").exists()


def test_train_exports_with_the_exporter_asked_for(tmp_path):
    """`archc train --exporter torchscript`: the pre-training check and the final export both trace (opset 18);
    by default the run's model.onnx is emitted (opset 23)."""
    import torch

    spec = tmp_path / "s.toml"
    spec.write_text('archc = 1\n[model]\nname = "s"\n[inputs.x]\nshape = [4]\n[task]\nkind = "regression"\n'
                    '[[layers]]\nid = "y"\nop = "linear"\nout_features = 1\n[train]\nepochs = 1\nbatch_size = 8\n')
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=x.sum(1, keepdims=True))
    threads = torch.get_num_threads()
    try:
        for exporter, opset in (("torchscript", 18), (None, 23)):
            out = tmp_path / f"run-{exporter}"
            flags = ["--exporter", exporter] if exporter else []
            r = CliRunner().invoke(main, ["train", str(spec), "--data", f"npz:{tmp_path / 'd.npz'}", "--out", str(out),
                                          "--quiet", "--no-tensorboard", *flags])
            assert r.exit_code == 0, r.output
            assert onnx.load(out / "model.onnx").opset_import[0].version == opset, exporter
    finally:
        torch.set_num_threads(threads)
