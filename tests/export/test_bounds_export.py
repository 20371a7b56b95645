"""The exporter traces and parity-checks only at sizes inside the graph's bounds: a GPT whose position table is
exactly its context builds (at 1,024 and at 1), and an axis its bounds pin is reported, not exceeded."""
from __future__ import annotations

import json

import onnxruntime as ort
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.errors import ArchcError
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


CUTS = {"none": None, "[:-1]": {"op": "slice", "start": 0, "end": -1}, "[1:]": {"op": "slice", "start": 1},
        "[0:3]": {"op": "slice", "start": 0, "end": 3}}


@pytest.mark.parametrize("cut", list(CUTS))
@pytest.mark.parametrize("max_len,seq", [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4), (4, 4), (4, 6), (3, None)])
def test_what_validates_exports(tmp_path, cut, max_len, seq):
    """Over sizes at and around a position table's edge, with the sequence sliced first or not: a spec either
    fails validate with an error located at a layer, or builds (export and parity) at sizes inside its bounds."""
    layers = [{"id": "emb", "op": "embedding", "num_embeddings": 16, "embedding_dim": 4}]
    layers += [CUTS[cut]] if CUTS[cut] else []
    layers += [{"id": "pos", "op": "pos_embedding", "max_len": max_len}, {"op": "linear", "out_features": 2}]
    spec = {"archc": 1, "model": {"name": "edge"}, "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64"}},
            "layers": layers} | ({"axes": {"seq": seq}} if seq else {})
    try:
        r = compile_spec(spec)
    except ArchcError as e:
        assert len(e.problems()) == 1 and e.problems()[0].where.startswith("layers[")  # one error, at a layer
        assert "expected a sequence of at most" in str(e) or "expected axis 'seq" in str(e)
        return
    report = export(r, tmp_path / "edge.onnx", module=lower(r.graph))
    assert report.max_abs_diff <= report.tolerance
