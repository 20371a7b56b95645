"""The language_model objective (next-byte cross-entropy, bits per byte) and sequence models trained end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from archc.errors import SpecError
from archc.pipeline import compile_spec
from archc.train import run
from archc.tasks import REGISTRY as OBJECTIVES
from archc.tasks.language_model import LanguageModel

CONTEXT = 16


def lm_spec(data: str = "text:corpus", *, dim: int = 16, context: int = CONTEXT, epochs: int = 1,
            head: dict | None = None) -> dict:
    """A tiny GPT: embedding, learned positions, one causal pre-norm block, tied output projection."""
    return {
        "archc": 1, "model": {"name": "tiny-lm"},
        "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}},
        "axes": {"seq": context}, "task": {"kind": "language_model"},
        "layers": [
            {"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": dim},
            {"id": "pos", "op": "pos_embedding", "max_len": context + 8},
            {"id": "norm1", "op": "layernorm"},
            {"id": "attn", "op": "attention", "num_heads": 2, "causal": True},
            {"id": "res", "op": "add", "from": ["pos", "attn"]},
            {"id": "norm", "op": "layernorm"},
            head or {"id": "logits", "op": "tied_linear", "tie": "emb"},
        ],
        "train": {"epochs": epochs, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 3e-3}},
        "data": {"source": data, "val_fraction": 0.2, "test_fraction": 0.2},
    }


def make_corpus(folder: Path, files: int = 5) -> Path:
    """A few small 'Python' files: enough for train/val/test splits by file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        lines = [f"def f{j}(x):\n    return x + {int(rng.integers(10))}\n" for j in range(20)]
        (folder / f"m{i}.py").write_text("".join(lines))
    return folder


def objective(spec: dict | None = None) -> LanguageModel:
    compiled = compile_spec(spec or lm_spec())
    return OBJECTIVES["language_model"](compiled.spec, compiled.graph)  # type: ignore[return-value]


def test_registered_with_bpb_metric():
    obj = objective()
    assert isinstance(obj, LanguageModel)
    assert (obj.metric, obj.higher_is_better, obj.data_task, obj.vocab) == ("bpb", False, "language_model", 256)


def test_uniform_logits_cost_eight_bits_per_byte():
    obj = objective()
    out, y = torch.zeros(3, 5, 256), torch.randint(0, 256, (3, 5))
    assert obj.loss(out, y).item() == pytest.approx(3 * math.log(256))        # summed over the 3 examples
    assert obj.metric_sum(out, y).item() == pytest.approx(3 * 8.0)
    assert obj.summary(math.log(256), 8.0)["perplexity"] == pytest.approx(256)


def test_loss_is_the_per_example_mean_of_token_cross_entropy():
    obj = objective()
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(4, 7, 256, generator=g) * 3, torch.randint(0, 256, (4, 7), generator=g)
    per_example = F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(dim=1)  # (4,)
    assert obj.loss(out, y).item() == pytest.approx(per_example.sum().item(), rel=1e-5)
    assert obj.metric_sum(out, y).item() == pytest.approx((per_example / math.log(2)).sum().item(), rel=1e-5)
    sure = F.one_hot(y, 256).float() * 50                                     # confident and right: ~0 bits
    assert obj.metric_sum(sure, y).item() == pytest.approx(0.0, abs=1e-6)


def test_output_must_be_batch_seq_vocab():
    spec = lm_spec(head={"id": "logits", "op": "mean_pool"})
    spec["layers"].append({"op": "linear", "out_features": 256})
    with pytest.raises(SpecError, match=r"\[batch, seq, vocab\]"):
        objective(spec)


def test_tiny_lm_trains_and_exports_the_tokenizer(tmp_path: Path):
    make_corpus(tmp_path / "corpus")
    spec = tmp_path / "lm.json"
    spec.write_text(json.dumps(lm_spec(epochs=2)))
    result = run(spec, out=tmp_path / "run", quiet=True)
    assert result is not None and result.metric == "bpb"
    test = result.test
    assert {"loss", "bpb", "perplexity", "unigram_bpb", "bigram_bpb", "examples"} <= set(test)
    assert test["bpb"] == pytest.approx(test["loss"] / math.log(2))
    assert test["perplexity"] == pytest.approx(math.exp(test["loss"]))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_bpb"] < rows[0]["val_bpb"] < 8.5                     # it learns from a sane start
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "run" / "model.onnx")).metadata_props}
    assert json.loads(meta["archc.tokenizer"]) == {"kind": "bytes", "vocab_size": 256, "context": CONTEXT}
    assert json.loads(meta["archc.task"])["kind"] == "language_model"
    assert "bigram_bpb" in json.loads(meta["archc.training"])["test"]


def test_lstm_sequence_classifier_trains_end_to_end(tmp_path: Path):
    """Sequences [8 steps, 4 features] → LSTM (last state) → 3 classes: the class is the step holding the peak."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((240, 8, 4)).astype(np.float32) * 0.3
    y = rng.integers(0, 3, 240)
    x[np.arange(240), y * 3, :] += 2.0
    np.savez(tmp_path / "seq.npz", x=x, y=y.astype(np.int64))
    spec = {"archc": 1, "model": {"name": "tiny-lstm"}, "inputs": {"x": {"shape": [8, 4]}},
            "task": {"kind": "classification"},
            "layers": [{"op": "lstm", "hidden_size": 16, "output": "last"}, {"op": "linear", "out_features": 3}],
            "train": {"epochs": 8, "batch_size": 16, "optimizer": {"name": "adam", "lr": 1e-2}},
            "data": {"source": f"npz:{tmp_path / 'seq.npz'}", "val_fraction": 0.2, "test_fraction": 0.2}}
    path = tmp_path / "lstm.json"
    path.write_text(json.dumps(spec))
    result = run(path, out=tmp_path / "run", quiet=True)
    assert result is not None and result.test["accuracy"] > 0.8
    assert (tmp_path / "run" / "model.onnx").exists()
