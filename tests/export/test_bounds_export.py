"""The exporter traces and parity-checks only at sizes inside the graph's bounds: a GPT whose position table is
exactly its context builds (at 1,024 and at 1), and an axis its bounds pin is reported, not exceeded."""
from __future__ import annotations

import json

import onnxruntime as ort
from click.testing import CliRunner

from archc.cli import main
from archc.export import export
from archc.lower import lower
from archc.pipeline import compile_spec


def lm(seq: int | None, max_len: int, vocab: int | None = 256, rows: int = 256) -> dict:
    """GPT-2's shape at a small width (d_model 32): embedding, learned positions, causal attention, tied head."""
    tokens = {"shape": ["seq"], "dtype": "int64"} | ({"vocab": vocab} if vocab is not None else {})
    return {"archc": 1, "model": {"name": "gpt"}, "inputs": {"tokens": tokens},
            "layers": [{"id": "emb", "op": "embedding", "num_embeddings": rows, "embedding_dim": 32},
                       {"id": "pos", "op": "pos_embedding", "max_len": max_len},
                       {"op": "attention", "num_heads": 2, "causal": True},
                       {"id": "logits", "op": "tied_linear", "tie": "emb"}]} | ({"axes": {"seq": seq}} if seq else {})


def sizes_checked(report) -> set[int]:
    return {c["sizes"]["seq"] for c in report.checks}


def test_a_context_equal_to_max_len_exports(tmp_path):
    r = compile_spec(lm(1024, 1024, rows=256))
    report = export(r, tmp_path / "gpt.onnx", module=lower(r.graph))
    assert report.max_abs_diff <= report.tolerance and not report.pinned
    assert sizes_checked(report) == {1023, 1022}  # both inside the table, both other than the traced 1024
    out = ort.InferenceSession(report.path).run(None, {"tokens": [[1] * 1024]})[0]
    assert out.shape == (1, 1024, 256)


def test_a_context_of_one_is_pinned_and_said(tmp_path):
    r = compile_spec(lm(1, 1))
    report = export(r, tmp_path / "one.onnx", module=lower(r.graph))
    assert sizes_checked(report) == {1}
    assert report.pinned == {"seq": "layers[1] (pos): max_len = 1, the position table's rows"}


def test_without_axes_the_export_stays_inside_the_table(tmp_path):
    r = compile_spec(lm(None, 8, vocab=None, rows=40))
    report = export(r, tmp_path / "small.onnx", module=lower(r.graph))
    assert max(sizes_checked(report)) <= 8 and r.graph.vocab["tokens"] == 40


def test_build_at_max_len_by_the_command(tmp_path):
    spec = tmp_path / "gpt.json"
    spec.write_text(json.dumps(lm(1024, 1024)))
    result = CliRunner().invoke(main, ["build", str(spec), "-o", str(tmp_path / "gpt.onnx")])
    assert result.exit_code == 0, result.output
    assert "parity vs torch at batch 1 (seq 1023), 3 (seq 1022)" in result.output
    spec.write_text(json.dumps(lm(1, 1)))
    result = CliRunner().invoke(main, ["build", str(spec), "-o", str(tmp_path / "one.onnx")])
    assert result.exit_code == 0, result.output
    assert "note: axis 'seq' checked at 1 only, the one size its bounds allow" in result.output
