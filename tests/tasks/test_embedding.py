"""The embedding task kind: the output rule at validate, the ONNX labels, `archc infer` presenting vectors (table,
strict --json, -o .npy/.npz) checked against torch's module and transformers' BERT, and the training objective."""
from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from archc.cli import main

ZOO = Path(__file__).resolve().parents[2] / "specs" / "zoo"
TOKENS = {"shape": ["seq"], "dtype": "int64", "vocab": 50}


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def encoder(**task) -> dict:
    """A tiny BERT-like encoder: per-token `hidden` [batch, seq, 8] and a tanh-pooled first token `pooled`."""
    return {"archc": 1, "model": {"name": "enc"}, "inputs": {"tokens": TOKENS}, "axes": {"seq": 6},
            "outputs": ["hidden", "pooled"], "task": {"kind": "embedding", **task},
            "layers": [{"id": "emb", "op": "embedding", "num_embeddings": 50, "embedding_dim": 8},
                       {"id": "attention", "op": "attention", "num_heads": 2},
                       {"id": "hidden", "op": "layernorm"},
                       {"id": "cls", "op": "select", "index": 0},
                       {"id": "pooled", "op": "linear", "out_features": 8, "act": "tanh"}]}


def write(tmp_path: Path, spec: dict, name: str = "s.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


# ---- validate ------------------------------------------------------------------------------------------------

def test_validate_accepts_pooled_and_per_token_vectors(tmp_path):
    for output in ("pooled", "hidden"):
        r = cli("validate", write(tmp_path, encoder(output=output)))
        assert r.exit_code == 0, r.output


@pytest.mark.parametrize("output, change, message", [
    ("cube", {"id": "cube", "op": "reshape", "shape": [2, 2, 2], "from": "pooled"},  # rank 4
     "task.kind: embedding expects the output 'cube' shaped [batch, dim] (pooled vectors) or [batch, seq, dim] (one "
     "vector per token), float32 with a fixed dim, received float32 [batch, 2, 2, 2]"),
    ("one", {"id": "one", "op": "select", "index": 0, "dim": 2, "from": "hidden"},  # each token's first feature
     "embedding expects the output 'one' shaped [batch, dim] (pooled vectors) or [batch, seq, dim] (one vector per "
     "token), float32 with a fixed dim, received float32 [batch, seq]"),
])
def test_validate_refuses_an_output_that_is_not_vectors(tmp_path, output, change, message):
    spec = encoder(output=output)
    spec["layers"].append(change)
    spec["outputs"].append(output)
    r = cli("validate", write(tmp_path, spec))
    assert r.exit_code == 1 and message in r.output, r.output
    assert "Traceback" not in r.output


def test_validate_refuses_labels_and_a_loss_of_another_kind(tmp_path):
    r = cli("validate", write(tmp_path, encoder(labels=["a", "b"])))
    assert r.exit_code == 1 and "task.labels: expected no labels for embedding" in r.output, r.output
    r = cli("validate", write(tmp_path, encoder() | {"train": {"loss": "cross_entropy"}}))
    assert r.exit_code == 1
    assert "train.loss: expected a loss for embedding (cosine, mse), received 'cross_entropy'" in r.output


def test_bert_zoo_spec_is_an_embedding_model_of_its_pooled_output():
    """validate says which output holds the vectors and what training would mean."""
    raw = tomllib.loads((ZOO / "bert.toml").read_text())
    assert raw["task"] == {"kind": "embedding", "output": "pooled"}
    r = cli("validate", ZOO / "bert.toml")
    assert r.exit_code == 0
    assert r.output.splitlines()[-1] == ("task: embedding of 'pooled' [batch, 768] (also 'hidden' [batch, seq, 768]); "
                                         "train: cosine to target vectors (npz: y [N, 768]); pretrained: archc build "
                                         "--weights FILE.safetensors")


# ---- infer against torch's module ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The encoder exported by the build pipeline, and the torch module it exported (the oracle)."""
    from archc.pipeline import BUILD_PASSES, BuildOptions, compiled_from, run

    folder = tmp_path_factory.mktemp("enc")
    model = folder / "enc.onnx"
    c = run(compiled_from(write(folder, encoder(output="pooled")), options=BuildOptions(seed=0, output=model)),
            BUILD_PASSES)
    tokens = np.random.default_rng(0).integers(0, 50, (3, 6))
    np.save(folder / "tokens.npy", tokens)
    return folder, model, c.module, tokens


def _torch(module, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.no_grad():
        hidden, pooled = module.eval()(torch.from_numpy(tokens))
    return hidden.numpy(), pooled.numpy()


def test_export_labels_every_output_of_vectors(built):
    _, model, _, _ = built
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert json.loads(meta["archc.task"])["kind"] == "embedding"
    kinds = {name: o["kind"] for name, o in json.loads(meta["archc.outputs"]).items()}
    assert kinds == {"hidden": "token_embeddings", "pooled": "embedding"}


def test_infer_writes_the_vectors_torch_computes(built):
    folder, model, module, tokens = built
    hidden, pooled = _torch(module, tokens)
    r = cli("infer", model, "--input", folder / "tokens.npy", "-o", folder / "vectors.npz")
    assert r.exit_code == 0, r.output
    with np.load(folder / "vectors.npz") as z:
        assert sorted(z.files) == ["hidden", "pooled", "row"]  # the outputs, and each example's row
        np.testing.assert_allclose(z["hidden"], hidden, atol=1e-5)
        np.testing.assert_allclose(z["pooled"], pooled, atol=1e-5)
    # a .npy holds one array: the task's output (pooled), not the first output (hidden)
    assert cli("infer", model, "--input", folder / "tokens.npy", "-o", folder / "pooled.npy").exit_code == 0
    np.testing.assert_allclose(np.load(folder / "pooled.npy"), pooled, atol=1e-5)
    # the table: a row per example and output, the task's output first, with tokens, dim, L2 norm, first values
    lines = r.output.splitlines()
    assert lines[0].split() == ["#", "output", "tokens", "dim", "norm", "values"]
    first, second = lines[2].split(maxsplit=5), lines[3].split(maxsplit=5)
    assert first[:4] == ["0", "pooled", "-", "8"] and float(first[4]) == pytest.approx(
        np.linalg.norm(pooled[0]), abs=1e-4)
    assert first[5].startswith(f"[{pooled[0][0]:.4g}, ") and first[5].endswith(", …]")
    assert second[:4] == ["0", "hidden", "6", "8"] and float(second[4]) == pytest.approx(
        np.linalg.norm(hidden[0], axis=-1).mean(), abs=1e-4)
    assert f"3 example(s) on CPUExecutionProvider; wrote {folder / 'vectors.npz'}" in r.output


def _strict(text: str):
    """json.loads that refuses NaN and Infinity, as strict JSON parsers do."""
    def refuse(token: str):
        raise ValueError(f"not strict JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def test_json_is_the_full_vectors_as_strict_json(built, tmp_path):
    folder, model, module, tokens = built
    hidden, pooled = _torch(module, tokens)
    r = cli("infer", model, "--input", folder / "tokens.npy", "--json")
    assert r.exit_code == 0, r.output
    records = _strict(r.output)
    assert len(records) == 3
    np.testing.assert_allclose(np.array([rec["pooled"] for rec in records]), pooled, atol=1e-5)
    np.testing.assert_allclose(np.array([rec["hidden"] for rec in records]), hidden, atol=1e-5)
    # a vector that overflowed (inf, NaN) is null, never NaN
    spec = {"archc": 1, "model": {"name": "wide"}, "inputs": {"x": {"shape": [4]}}, "task": {"kind": "embedding"},
            "layers": [{"id": "a", "op": "linear", "out_features": 3}, {"id": "v", "op": "mul", "from": ["a", "a"]}]}
    assert cli("build", write(tmp_path, spec), "-o", tmp_path / "wide.onnx").exit_code == 0
    np.save(tmp_path / "x.npy", np.array([[1.0, 2.0, 3.0, 4.0], [3e38, 3e38, -3e38, 3e38]], np.float32))
    r = cli("infer", tmp_path / "wide.onnx", "--input", tmp_path / "x.npy", "--json")
    assert r.exit_code == 0 and "NaN" not in r.output and "Infinity" not in r.output, r.output
    first, overflowed = _strict(r.output)
    assert None not in first["v"] and None in overflowed["v"]  # (3e38 * w)^2 overflows float32


def test_output_file_rules_are_builds(built, tmp_path):
    """-o replaces a file only whole, after the run succeeded (as `build -o`): a failed run leaves the user's file
    as it was and no temporary file beside it; a directory, a missing folder or an unknown type is refused first."""
    folder, model, _, _ = built
    mine = tmp_path / "vectors.npy"
    mine.write_bytes(b"the user's own file")
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.float32))  # float tokens: refused by the input check
    r = cli("infer", model, "--input", tmp_path / "bad.npy", "-o", mine)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert mine.read_bytes() == b"the user's own file" and sorted(os.listdir(tmp_path)) == ["bad.npy", "vectors.npy"]
    for target, message in ((tmp_path, "expected a file to write, received a directory"),
                            (tmp_path / "no" / "v.npy", "output directory not found"),
                            (tmp_path / "v.txt", "unsupported output file type")):
        r = cli("infer", model, "--input", folder / "tokens.npy", "-o", target)
        assert r.exit_code == 1 and message in r.output, r.output
    r = cli("infer", model, "--input", folder / "tokens.npy", "-o", mine)
    assert r.exit_code == 0 and np.load(mine).shape == (3, 8)
    assert sorted(os.listdir(tmp_path)) == ["bad.npy", "vectors.npy"]


# ---- infer against transformers' BERT ------------------------------------------------------------------------

def test_bert_features_match_transformers(tmp_path):
    """The zoo BERT spec (its embedding task) at a small size, loaded from a transformers BertModel's checkpoint:
    `archc infer -o` writes transformers' last hidden state and pooler output."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                     intermediate_size=64, vocab_size=100, max_position_embeddings=32)
    hf = transformers.BertModel(config).eval()
    hf.save_pretrained(tmp_path)
    raw = tomllib.loads((ZOO / "bert.toml").read_text())
    raw["params"].update(vocab=100, context=32, dim=32, heads=4, layers=2, ffn=64, pdrop=0.0)
    raw["inputs"]["tokens"]["vocab"], raw["axes"]["seq"] = 100, 10
    r = cli("build", write(tmp_path, raw, "bert.json"), "--weights", tmp_path / "model.safetensors",
            "--map", ZOO / "bert.weights.toml", "-o", tmp_path / "bert.onnx")
    assert r.exit_code == 0, r.output
    rng = np.random.default_rng(1)
    tokens, types = rng.integers(0, 100, (2, 10)), rng.integers(0, 2, (2, 10))
    np.savez(tmp_path / "in.npz", tokens=tokens, token_types=types)
    r = cli("infer", tmp_path / "bert.onnx", "--input", tmp_path / "in.npz", "-o", tmp_path / "vectors.npz")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[2].split()[:4] == ["0", "pooled", "-", "32"]
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(tokens), token_type_ids=torch.from_numpy(types))
    with np.load(tmp_path / "vectors.npz") as z:
        assert np.abs(z["hidden"] - ref.last_hidden_state.numpy()).max() <= 1e-4
        assert np.abs(z["pooled"] - ref.pooler_output.numpy()).max() <= 1e-4


# ---- train ---------------------------------------------------------------------------------------------------

def test_objective_is_torchs_cosine_similarity_and_mse():
    """The loss and metric, per token averaged then summed over the batch, against torch's own functions."""
    import torch

    from archc.pipeline import compile_spec
    from archc.tasks import objective_for

    out, y = torch.randn(5, 6, 8), torch.randn(5, 6 * 8)  # per-token targets, flattened in the file
    for loss in ("cosine", "mse"):
        spec = encoder(output="hidden") | {"train": {"loss": loss}}
        c = compile_spec(spec)
        objective = objective_for(c.spec, c.graph)
        cos = torch.nn.functional.cosine_similarity(out, y.view(5, 6, 8), dim=-1).mean(dim=1)   # (5,)
        assert float(objective.metric_sum(out, y)) == pytest.approx(float(cos.sum()), rel=1e-5)
        want = (1 - cos).sum() if loss == "cosine" else \
            torch.nn.functional.mse_loss(out, y.view(5, 6, 8), reduction="none").mean(dim=(1, 2)).sum()
        assert float(objective.loss(out, y)) == pytest.approx(float(want), rel=1e-5)


def test_per_token_training_reaches_its_targets_and_refuses_wrong_ones(tmp_path):
    """Targets per token (y [N, seq * dim]) train the per-token output; targets of another width are refused
    before any step, naming what the output holds."""
    from archc import train
    from archc.errors import DataError

    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (64, 6))
    table = rng.standard_normal((50, 8)).astype(np.float32)
    np.savez(tmp_path / "t.npz", x=x, y=table[x].reshape(64, -1))               # a teacher's token vectors
    spec = encoder(output="hidden") | {"train": {"epochs": 30, "batch_size": 16, "optimizer": {"name": "adam",
                                                                                                "lr": 0.02}},
                                       "data": {"source": f"npz:{tmp_path / 't.npz'}"}}
    result = train.run(spec, out=tmp_path / "run", quiet=True)
    assert result.metric == "cosine_similarity" and result.test["cosine_similarity"] > 0.5, result
    np.savez(tmp_path / "w.npz", x=x, y=rng.standard_normal((64, 5)).astype(np.float32))
    with pytest.raises(DataError, match=r"expected target vectors of 48 float values per example \(the output "
                                        r"'hidden' \[batch, seq, 8\]\), received float32 \[5\] per example"):
        train.run(spec | {"data": {"source": f"npz:{tmp_path / 'w.npz'}"}}, out=tmp_path / "run2", quiet=True)
    np.savez(tmp_path / "s.npz", x=x, y=table[x[:, :5]].reshape(64, -1))     # 5 tokens' vectors for 6 tokens
    with pytest.raises(DataError, match=r"expected target vectors of 48 float values per example"):
        train.run(spec | {"data": {"source": f"npz:{tmp_path / 's.npz'}"}}, out=tmp_path / "run3", quiet=True)


def test_npy_holds_the_task_output_of_any_kind(tmp_path):
    """A .npy holds one array: it was the first output even when [task] output names another (a classifier's
    logits after an auxiliary output); now the output the task reads, for every kind."""
    spec = {"archc": 1, "model": {"name": "two"}, "inputs": {"x": {"shape": [4]}}, "outputs": ["aux", "logits"],
            "task": {"kind": "classification", "output": "logits"},
            "layers": [{"id": "aux", "op": "linear", "out_features": 3},
                       {"id": "logits", "op": "linear", "out_features": 2, "from": "x"}]}
    assert cli("build", write(tmp_path, spec), "-o", tmp_path / "two.onnx").exit_code == 0
    np.save(tmp_path / "x.npy", np.ones((5, 4), np.float32))
    r = cli("infer", tmp_path / "two.onnx", "--input", tmp_path / "x.npy", "-o", tmp_path / "out.npy")
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "out.npy").shape == (5, 2)


def test_recorded_output_of_a_model_with_odd_metadata_is_its_first():
    """A model whose archc.spec is not JSON, or names no (or an unknown) output, writes its first output."""
    from types import SimpleNamespace

    from archc.tasks.base import recorded_output

    outputs = {"a": None, "b": None}
    for spec in ("{", "[]", '{"task": 3}', '{"task": {"output": ["b"]}}', '{"task": {"output": "zz"}}'):
        assert recorded_output(SimpleNamespace(metadata={"archc.spec": spec}, outputs=outputs)) == "a", spec
    named = SimpleNamespace(metadata={"archc.spec": '{"task": {"output": "b"}}'}, outputs=outputs)
    assert recorded_output(named) == "b"
