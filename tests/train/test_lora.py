"""[train.lora] on a small SmolLM-style decoder (the zoo's spec at a tiny size, random weights, a text corpus and a
BPE tokenizer trained here): the loss falls, only the adapters change, the checkpoints and the ONNX hold the merged
weights and equal the unmerged module, and an interrupted run resumes bit-identically."""
from __future__ import annotations

import copy
import json
import random
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

import archc.train.loop as loop
from archc.data.tokenizer_file import train_bpe
from archc.export.fronts import ATOL, RTOL
from archc.lower import lower
from archc.pipeline import compile_spec
from archc.train import run
from archc.train.tuning import PREFIX, Adapters

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 300  # the bytes, the end-of-text token and BPE merges
SMALL = {"vocab": VOCAB, "dim": 32, "heads": 4, "kv_heads": 2, "layers": 2, "ffn": 64, "eps": 1e-5,
         "rope_base": 10000.0}
TARGETS = ["layers.{i}.self_attn", "layers.{i}.mlp.up_proj"]


class Stopped(Exception):
    pass


def small_decoder(data: str, lora: dict | None = None, **train) -> dict:
    """specs/zoo/smollm_135m.toml with [params] of a tiny model (2 blocks, 32 wide, 4 heads / 2 kv heads)."""
    raw = tomllib.loads((ROOT / "specs" / "zoo" / "smollm_135m.toml").read_text())
    raw["params"] = dict(SMALL)
    raw["inputs"]["tokens"]["vocab"] = SMALL["vocab"]
    raw["axes"]["seq"] = 16
    raw["train"] = {"epochs": 2, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 1e-2}} | train
    if lora is not None:
        raw["train"]["lora"] = lora
    raw["data"] = {"source": data, "val_fraction": 0.2, "test_fraction": 0.2}
    return raw


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """A folder of text and a byte-level BPE of VOCAB ids trained on it (as `archc tokenizer train` does)."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = "the quick brown fox jumps over a lazy dog while seven small birds sing".split()
    texts = [" ".join(rng.choice(words) for _ in range(300)) for _ in range(6)]
    for i, text in enumerate(texts):
        (folder / f"f{i}.txt").write_text(text)
    tokenizer = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.write_text(train_bpe(texts, VOCAB))
    return f"text:{folder}?tokenizer={tokenizer}"


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A LoRA run of two epochs, checkpointing mid-epoch."""
    out = tmp_path_factory.mktemp("runs") / "whole"
    spec = small_decoder(corpus, {"rank": 4, "alpha": 8, "targets": TARGETS, "dropout": 0.1}, checkpoint_every=5)
    result = run(spec, out=out, quiet=True, device="cpu", optimize=False)  # the plain export, node for node
    return spec, out, result


def initial(spec: dict) -> torch.nn.Module:
    compiled = compile_spec(spec)
    return lower(compiled.graph, seed=compiled.spec.train.seed)


def test_the_loss_falls_and_only_the_adapters_change(trained):
    spec, out, result = trained
    losses = [json.loads(line)["train_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.3, losses  # from about ln(300) = 5.7 towards the corpus' few words
    assert result.final["val_loss"] < 5.0
    state = load_file(out / "train_state.safetensors")
    model = initial(spec)
    for name, value in model.state_dict().items():  # the base weights, before the merge: as the seed made them
        assert torch.equal(state[f"model.{name}"], value), name
    adapters = {k: v for k, v in state.items() if k.startswith(PREFIX)}
    # 2 blocks x (q, k, v, out, up) x (A, B); B starts at zero and has moved
    assert len(adapters) == 2 * 5 * 2, sorted(adapters)
    assert all(v.abs().max() > 0 for k, v in adapters.items() if k.endswith("lora_B"))
    optimized = {k.split(".")[1] for k in state if k.startswith("optim.")}
    assert len(optimized) == len(adapters)  # the optimizer holds the adapters alone


def test_weights_files_hold_the_merged_model_and_the_onnx_is_plain(trained, tmp_path):
    spec, out, _ = trained
    state = load_file(out / "train_state.safetensors")
    model = initial(spec)
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    compiled = compile_spec(spec)
    adapters = Adapters.for_graph(model, compiled.graph, compiled.spec.train.lora, 0)
    adapters.load({k: v for k, v in state.items() if k.startswith(PREFIX)})
    merged = adapters.merged({k: v.detach() for k, v in model.state_dict().items()})
    latest = load_file(out / "checkpoint.safetensors")
    assert set(latest) == set(merged)
    for name in merged:
        assert torch.equal(latest[name], merged[name]), name
    changed = {k for k in merged if not torch.equal(merged[k], state[f"model.{k}"])}
    assert changed == {f"layers.{i}.self_attn.{p}.weight" for i in range(2)
                       for p in ("q_proj", "k_proj", "v_proj", "out_proj")} | \
        {f"layers.{i}.mlp.up_proj.weight" for i in range(2)}

    # the exported graph is the plain model's: same nodes, same op types, as the spec without [train.lora]
    plain = copy.deepcopy(spec)
    del plain["train"]["lora"]
    c = compile_spec(plain)
    from archc.export import export

    export(c, tmp_path / "plain.onnx", module=lower(c.graph, seed=0), optimize=False)
    ops = lambda p: [n.op_type for n in onnx.load(str(p)).graph.node]  # noqa: E731
    assert ops(out / "model.onnx") == ops(tmp_path / "plain.onnx")
    assert not any("lora" in i.name for i in onnx.load(str(out / "model.onnx")).graph.initializer)

    # the merged ONNX computes what the unmerged module (the adapters on their hooks) computes: best == latest here
    best = load_file(out / "best.safetensors")
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    assert all(torch.equal(best[k], latest[k]) for k in best)  # monitor: the last epoch was the best
    tokens = np.random.default_rng(1).integers(0, VOCAB, size=(3, 16)).astype(np.int64)
    model.eval()
    with torch.no_grad():
        unmerged = model(torch.from_numpy(tokens)).numpy()
    onnx_out = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"tokens": tokens})[0]
    diff = np.abs(onnx_out - unmerged).max()
    assert diff <= ATOL + RTOL * np.abs(unmerged).max()  # the parity check's tolerance
    assert diff < np.abs(unmerged - plain_out(model, adapters, tokens)).max() / 100


def plain_out(model: torch.nn.Module, adapters: Adapters, tokens: np.ndarray) -> np.ndarray:
    """The base model's output without its adapters: the adapters must matter for the comparison to mean much."""
    adapters.detach()
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).numpy()


def test_an_interrupted_lora_run_resumes_bit_identically(trained, corpus, tmp_path, monkeypatch):
    spec, out, _ = trained
    real, calls = loop.save, []

    def stop_mid_epoch(run_dir, learner, state, tally, dist, clock=None):
        real(run_dir, learner, state, tally, dist, clock)
        calls.append(state.step)
        if len(calls) == 4:  # at steps 5, 10, 15, then mid epoch 2
            raise Stopped

    monkeypatch.setattr(loop, "save", stop_mid_epoch)
    with pytest.raises(Stopped):
        run(spec, out=tmp_path / "cut", quiet=True, device="cpu", optimize=False)
    monkeypatch.setattr(loop, "save", real)
    run(spec, out=tmp_path / "cut", quiet=True, device="cpu", resume=True, optimize=False)
    a, b = load_file(out / "train_state.safetensors"), load_file(tmp_path / "cut" / "train_state.safetensors")
    names = [k for k in a if k.startswith(("model.", PREFIX, "optim."))]
    assert any(k.startswith(PREFIX) for k in names) and set(names) <= set(b)
    for k in names:
        assert torch.equal(a[k], b[k]), k
    for k, v in load_file(out / "checkpoint.safetensors").items():
        assert torch.equal(v, load_file(tmp_path / "cut" / "checkpoint.safetensors")[k]), k
