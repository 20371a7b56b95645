"""A run never ends in an export failure: `archc train` exports the initialized model (the same export and parity
check) before its first step, and `archc export RUN_DIR` exports any checkpoint of a run, with the metadata of the
run's own model.onnx."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import archc.export.onnx as onnx_export
import archc.train.loop as loop
from archc.cli import main
from archc.errors import DataError, ExportError
from archc.train import run


def cli(*args) -> "CliRunner.invoke":
    return CliRunner().invoke(main, [str(a) for a in args])


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_an_export_failure_is_found_before_any_training(tiny, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise ExportError("output 'out' at batch 1: expected ONNX Runtime to match torch")

    monkeypatch.setattr(onnx_export, "parity", refuse)
    with pytest.raises(ExportError) as info:
        run(tiny, out=tmp_path / "run", quiet=True)
    assert "found by exporting the model before training" in info.value.hint
    assert not (tmp_path / "run").exists()  # no folder claimed, no step taken, nothing to lose


def test_a_context_equal_to_its_position_table_trains_and_exports(tmp_path):
    """The class that ended runs at their final export (exit 3, no model.onnx): max_len = [axes] seq."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(5):
        (corpus / f"m{i}.py").write_text("".join(f"def f{j}(x):\n    return x + {j % 7}\n" for j in range(20)))
    spec = {"archc": 1, "model": {"name": "lm"}, "axes": {"seq": 16}, "task": {"kind": "language_model"},
            "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}},
            "layers": [{"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 16},
                       {"id": "pos", "op": "pos_embedding", "max_len": 16},
                       {"op": "attention", "num_heads": 2, "causal": True},
                       {"id": "logits", "op": "tied_linear", "tie": "emb"}],
            "train": {"epochs": 1, "batch_size": 8},
            "data": {"source": f"text:{corpus}", "val_fraction": 0.2, "test_fraction": 0.2}}
    result = run(spec, out=tmp_path / "run", quiet=True)
    onnx_file = Path(result.paths["onnx"])
    logits = ort.InferenceSession(str(onnx_file)).run(None, {"tokens": np.zeros((2, 16), np.int64)})[0]
    assert logits.shape == (2, 16, 256)


def test_export_reproduces_the_runs_own_model(tiny, tmp_path):
    out = tmp_path / "run"
    run(tiny, out=out, quiet=True)
    again = cli("export", out, "-o", tmp_path / "again.onnx")
    assert again.exit_code == 0, again.output
    assert again.output.startswith(f"wrote {tmp_path / 'again.onnx'} (") and "parity vs torch at batch 1, 3" in \
        again.output
    again_meta, own = metadata(tmp_path / "again.onnx"), metadata(out / "model.onnx")  # preprocess, training, task
    # the data source relative to each model's folder: the same file
    assert (again_meta.pop("archc.source"), own.pop("archc.source")) == ("npz:data.npz", "npz:../data.npz")
    assert again_meta == own
    x = {"x": np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)}
    ours, theirs = (ort.InferenceSession(str(p)).run(None, x)[0] for p in (tmp_path / "again.onnx", out / "model.onnx"))
    np.testing.assert_array_equal(ours, theirs)
    # the last weights, by default beside the run's model
    last = cli("export", out, "--checkpoint", "last")
    assert last.exit_code == 0, last.output
    assert json.loads(metadata(out / "model-last.onnx")["archc.training"])["checkpoint"] == "last"
    # a run recorded before export.json: its data are read again for the same metadata
    (out / "export.json").unlink()
    from archc.train.api import export_run
    export_run(out, output=tmp_path / "older.onnx")
    older = metadata(tmp_path / "older.onnx")
    assert older.pop("archc.source") == "npz:data.npz" and older == own  # relative to older.onnx's folder


def test_export_rescues_a_run_whose_final_export_failed(tiny, tmp_path, monkeypatch):
    def fail_at_the_end(*args, **kwargs):
        raise ExportError("torch.onnx.export (torchscript) failed")

    monkeypatch.setattr(loop, "export_model", fail_at_the_end)
    out = tmp_path / "run"
    with pytest.raises(ExportError):
        run(tiny, out=out, quiet=True)
    assert (out / "best.safetensors").exists() and not (out / "model.onnx").exists()
    monkeypatch.undo()
    from archc.train.api import export_run
    report = export_run(out)
    assert report.path == str(out / "model.onnx") and report.max_abs_diff <= report.tolerance
    training = json.loads(metadata(out / "model.onnx")["archc.training"])
    assert training["epochs_run"] == 3 and training["best_epoch"] in (1, 2, 3) and training["test"] == {}


def test_export_refuses_what_is_not_a_run_or_a_checkpoint(tiny, tmp_path):
    result = cli("export", tmp_path / "nothing")
    assert result.exit_code == 1 and "expected a run folder of `archc train` (holding spec.json)" in result.output
    out = tmp_path / "run"
    run(tiny, out=out, quiet=True)
    result = cli("export", out, "--checkpoint", tmp_path / "no.safetensors")
    assert result.exit_code == 1 and "--checkpoint: expected a weights file" in result.output
    result = cli("export", out, "-o", tmp_path)
    assert result.exit_code == 1 and "expected a file to write, received a directory" in result.output
    (out / ".archc.lock").write_text(f"{os.getpid()}\n")  # a live run writing the folder
    result = cli("export", out)
    assert result.exit_code == 1 and "is in use" in result.output
    assert cli("export", out, "-o", tmp_path / "elsewhere.onnx").exit_code == 0


def test_ids_beyond_the_table_an_input_feeds_are_a_data_error(tmp_path):
    """No vocab declared: the table's rows bound the ids, checked against the data before any step."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ids.npz", x=rng.integers(0, 20, (120, 8)).astype(np.int64),
             y=rng.integers(0, 3, 120).astype(np.int64))
    spec = {"archc": 1, "model": {"name": "ids"}, "inputs": {"x": {"shape": [8], "dtype": "int64"}},
            "task": {"kind": "classification"},
            "layers": [{"op": "embedding", "num_embeddings": 10, "embedding_dim": 4}, {"op": "mean_pool"},
                       {"op": "linear", "out_features": 3}],
            "train": {"epochs": 1, "batch_size": 16},
            "data": {"source": f"npz:{tmp_path / 'ids.npz'}", "val_fraction": 0.2, "test_fraction": 0.2}}
    with pytest.raises(DataError) as info:
        run(spec, out=tmp_path / "run", quiet=True)
    assert str(info.value).startswith("data ") and "expected ids of input 'x' in 0..9 (its vocab, within the " \
                                                  "tables it indexes), received 19" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_trained_size_weights_stay_finite(tmp_path):
    """The check's weights are the seed's weight matrices x4 (exact: a power of two), biases as they are; where that
    would overflow (150 plain linear layers: 2.3^150), the seed's weights unchanged."""
    from types import SimpleNamespace

    import torch

    from archc.lower import lower
    from archc.pipeline import compile_spec
    from archc.train.export_check import TRAINED_SCALE, trained_like

    def spec(repeat: int) -> dict:
        return {"archc": 1, "model": {"name": "deep"}, "inputs": {"x": {"shape": [8]}},
                "blocks": {"b": {"layers": [{"op": "linear", "out_features": 8}]}},
                "layers": [{"use": "b", "repeat": repeat}]}

    for repeat, scaled in ((3, True), (150, False)):
        graph = compile_spec(spec(repeat)).graph
        module, initial = lower(graph, seed=0), lower(graph, seed=0).state_dict()
        assert trained_like(module, SimpleNamespace(graph=graph)) is scaled
        for name, value in module.state_dict().items():
            factor = TRAINED_SCALE if scaled and value.ndim >= 2 else 1.0
            assert torch.equal(value, initial[name] * factor), (repeat, name)
