"""KV-cache export (model.kv.onnx) and cached generation: step parity with torch, identical greedy output,
refusal of specs that mix positions, stale or missing cache files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from archc.errors import ExportError
from archc.export.kvcache import CacheReport, Refusal, refusal
from archc.pipeline import BUILD_PASSES, BuildOptions, compiled_from, run
from archc.runtime import Model, generate
from archc.runtime.kvcache import CachedLM, cache_path

CONTEXT = 10
EMB = {"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 16}
TIED = {"id": "logits", "op": "tied_linear", "tie": "emb"}


def spec(*layers: dict, context: int = CONTEXT) -> dict:
    return {"archc": 1, "model": {"name": "kv-lm"},
            "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}},
            "axes": {"seq": context}, "task": {"kind": "language_model"}, "layers": [EMB, *layers, TIED]}


def block(i: int, **attn: object) -> list[dict]:
    """A pre-norm transformer block: norm, causal attention, residual, norm, MLP, residual."""
    x = "pos" if i == 0 else f"r{i - 1}b"
    return [{"id": f"n{i}a", "op": "layernorm", "from": x},
            {"id": f"a{i}", "op": "attention", "num_heads": 4, "causal": True, **attn},
            {"id": f"r{i}a", "op": "add", "from": [x, f"a{i}"]},
            {"id": f"n{i}b", "op": "rmsnorm"},
            {"id": f"m{i}", "op": "gated_mlp", "hidden_features": 24},
            {"id": f"r{i}b", "op": "add", "from": [f"r{i}a", f"m{i}"]}]


VARIANTS = {
    # GPT-2 style: learned positions, its table 2 rows longer than the context
    "learned": spec({"id": "pos", "op": "pos_embedding", "max_len": CONTEXT + 2}, *block(0), *block(1)),
    # Llama style: RoPE, grouped-query attention, fused projections, partial rotary, no position table
    "rope_gqa": spec({"id": "pos", "op": "dropout", "p": 0.0}, *block(0, rope=True, num_kv_heads=2, bias=False),
                     *block(1, rope=True, num_kv_heads=1, fused_qkv=True, rope_dims=2)),
    "sinusoidal": spec({"id": "pos", "op": "sinusoidal_pos"}, *block(0, num_kv_heads=2)),
    # Mistral / Qwen2 style: sliding windows shorter than the context (across past and new keys), biases on q, k, v
    # only, a scale of its own
    "window": spec({"id": "pos", "op": "dropout", "p": 0.0},
                   *block(0, rope=True, num_kv_heads=2, window=3, out_bias=False, scale=0.3),
                   *block(1, rope=True, window=5, bias=False, k_bias=True)),
    # score biases from positions (issue 24): BLOOM's ALiBi, one node read by both layers (one with grouped keys);
    # T5's causal relative buckets with its scale of 1 (and a window on the second layer)
    "alibi": spec({"id": "pos", "op": "dropout", "p": 0.0}, {"id": "bias", "op": "alibi", "num_heads": 4},
                  *block(0, bias_from="bias"), *block(1, bias_from="bias", num_kv_heads=2)),
    "t5_buckets": spec({"id": "pos", "op": "dropout", "p": 0.0},
                       {"id": "bias", "op": "relative_position_bias", "num_heads": 4, "num_buckets": 8,
                        "max_distance": 6, "bidirectional": False},
                       *block(0, bias_from="bias", scale=1.0), *block(1, bias_from="bias", window=4, scale=1.0)),
}


def build(tmp: Path, raw: dict, seed: int = 0) -> tuple[object, Path]:
    out = tmp / "model.onnx"
    c = run(compiled_from(raw, options=BuildOptions(seed=seed, output=out)), BUILD_PASSES)
    return c, out


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    return build(tmp_path_factory.mktemp(request.param), VARIANTS[request.param], seed=3)


def ort_steps(kv: Path, tokens: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    """The cache file run chunk by chunk (tokens[:, a:b] for consecutive cuts): the logits of each chunk."""
    m = CachedLM.open(Model.open(kv.with_name("model.onnx"), device="cpu"))[0]
    assert m is not None
    past, outs = m.empty(tokens.shape[0]), []
    for a, b in zip(cuts, cuts[1:]):
        logits, past = m.run(tokens[:, a:b], past)
        assert all(p.shape[2] == b for p in past)  # present = past + new
        outs.append(logits)
    return outs


def test_cache_file_matches_full_recompute_step_by_step(built: tuple[object, Path]) -> None:
    c, out = built
    assert isinstance(c.report.kvcache, CacheReport) and cache_path(out).is_file()
    tokens = np.random.default_rng(1).integers(0, 256, size=(3, CONTEXT)).astype(np.int64)  # batch 3
    with torch.no_grad():
        full = c.module(torch.from_numpy(tokens)).numpy()
    cuts = [0, 4, 5, 6, 7, 8, CONTEXT]  # prefill 4, four single-token decodes, a chunk of 2
    for (a, b), got in zip(zip(cuts, cuts[1:]), ort_steps(cache_path(out), tokens, cuts)):
        np.testing.assert_allclose(got, full[:, a:b], atol=2e-5, rtol=1e-4)


def test_cache_file_names_and_dynamic_axes(built: tuple[object, Path]) -> None:
    _, out = built
    g = onnx.load(str(cache_path(out))).graph
    layers = json.loads(Model.open(cache_path(out), device="cpu").metadata["archc.kvcache"])["layers"]
    names = [f"{d}.{i}.{kv}" for d in ("past",) for i in range(layers) for kv in ("key", "value")]
    assert [i.name for i in g.input] == ["tokens", *names]
    assert [o.name for o in g.output] == ["logits", *(n.replace("past", "present") for n in names)]
    dims = [d.dim_param for d in g.input[1].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[2] == "past"
    assert [d.dim_param for d in g.input[0].type.tensor_type.shape.dim] == ["batch", "new"]


@pytest.mark.parametrize("new", [3, CONTEXT - 2, 3 * CONTEXT])  # inside the window, filling it, sliding past it
def test_greedy_output_identical_with_and_without_cache(built: tuple[object, Path], new: int) -> None:
    _, out = built
    m = Model.open(out, device="cpu")
    cached = generate(m, "ab", max_new_tokens=new, temperature=0, cache=True)
    plain = generate(m, "ab", max_new_tokens=new, temperature=0, cache=False)
    assert cached.cached and not plain.cached
    assert cached.tokens == plain.tokens and cached.text == plain.text and len(cached.tokens) == new
    long_prompt = "x" * (CONTEXT + 3)  # longer than the window: the last CONTEXT bytes are prefilled
    assert generate(m, long_prompt, max_new_tokens=4, temperature=0).tokens == \
        generate(m, long_prompt, max_new_tokens=4, temperature=0, cache=False).tokens


def test_sampling_identical_with_and_without_cache(built: tuple[object, Path]) -> None:
    m = Model.open(built[1], device="cpu")
    a = generate(m, "q", max_new_tokens=25, temperature=1.3, top_k=20, seed=4)
    b = generate(m, "q", max_new_tokens=25, temperature=1.3, top_k=20, seed=4, cache=False)
    assert a.cached and a.tokens == b.tokens


UNCACHABLE = [
    (spec({"id": "pos", "op": "pos_embedding", "max_len": CONTEXT},
          {"id": "attn", "op": "attention", "num_heads": 2}), "layers[2]", "not causal"),
    (spec({"id": "pos", "op": "pos_embedding", "max_len": CONTEXT},
          {"id": "cf", "op": "permute", "dims": [0, 2, 1]},  # a conv over the sequence: channels first
          {"id": "conv", "op": "conv1d", "out_channels": 16, "kernel_size": 3, "padding": "same"},
          {"id": "cl", "op": "permute", "dims": [0, 2, 1]},
          {"id": "attn", "op": "attention", "num_heads": 2, "causal": True}), "layers[2]", "'permute'"),
]


@pytest.mark.parametrize("raw, where, why", UNCACHABLE)
def test_uncachable_spec_is_refused_with_its_location_and_generation_recomputes(
        tmp_path: Path, raw: dict, where: str, why: str) -> None:
    cache_path(tmp_path / "model.onnx").write_bytes(b"stale")  # an earlier export's cache must not survive
    c, out = build(tmp_path, raw)
    assert isinstance(c.report.kvcache, Refusal)
    assert where in c.report.kvcache.where and why in c.report.kvcache.why
    assert not cache_path(out).exists()
    r = generate(Model.open(out, device="cpu"), "ab", max_new_tokens=3, temperature=0)
    assert not r.cached and "no model.kv.onnx" in r.note


def test_refusal_of_other_tasks_and_missing_attention() -> None:
    c = run(compiled_from(spec({"id": "pos", "op": "pos_embedding", "max_len": CONTEXT})), BUILD_PASSES[:4])
    assert "no" in refusal(c.graph, "language_model").why
    assert "language_model" in refusal(c.graph, "classification").why


def test_stale_cache_file_is_not_used(tmp_path: Path) -> None:
    """A cache exported with other weights (model.onnx re-exported alone) is ignored, with the reason."""
    _, out = build(tmp_path, VARIANTS["learned"], seed=0)
    kv = cache_path(out).read_bytes()
    build(tmp_path, VARIANTS["learned"], seed=1)
    cache_path(out).write_bytes(kv)
    r = generate(Model.open(out, device="cpu"), "ab", max_new_tokens=3, temperature=0)
    assert not r.cached and "another model.onnx" in r.note


def test_parity_failure_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache graph that drifts from the module (here: its attention layers forget the past) fails its step parity
    check: no cache file, and the build (model.onnx, checked) goes on with a note."""  # (zeros in its place)
    import archc.export.kvcache as kvc
    from archc.emit.builder import KVCache

    real = KVCache.take

    def forgetful(self, e):
        return tuple(e.op("Mul", p, e.scalar(0.0)) for p in real(self, e))

    monkeypatch.setattr(KVCache, "take", forgetful)
    c, out = build(tmp_path, VARIANTS["learned"])
    assert out.is_file() and not cache_path(out).exists()
    assert isinstance(c.report.kvcache, Refusal) and "KV-cache logits at past" in c.report.kvcache.why
    with pytest.raises(ExportError, match="KV-cache logits at past"):
        kvc.export_cache(c, c.module, out)
    assert not cache_path(out).exists()


def test_cache_graph_is_emitted_with_the_models_weights(built: tuple[object, Path], tmp_path: Path) -> None:
    """One attention implementation: the cache graph is the ops' own emit (ONNX's Attention with past_key/past_value,
    opset 23), its weights the model's under the same names (not optimized here: onnxslim folds the transposes of
    both files' weights into new tensors); the build's phases time it."""
    import shutil

    from archc.export.kvcache import export_cache

    c, out = built
    main = tmp_path / "model.onnx"
    shutil.copy(out, main)
    report = export_cache(c, c.module, main)
    assert isinstance(report, CacheReport) and report.optimized is None
    kv = onnx.load(str(cache_path(main)))
    assert kv.opset_import[0].version == 23
    weights = {k: v.detach().numpy() for k, v in c.module.state_dict().items()}
    assert {t.name for t in kv.graph.initializer} == set(weights)
    for t in kv.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(t), weights[t.name])
    attention = [n for n in kv.graph.node if n.op_type == "Attention"]
    layers = len([i for i in kv.graph.input if i.name.endswith(".key")])
    assert len(attention) == layers and all(len(n.input) == 6 and len(n.output) == 3 for n in attention)
    assert [n.input[4] for n in attention] == [f"past.{i}.key" for i in range(layers)]
    assert [n.output[1] for n in attention] == [f"present.{i}.key" for i in range(layers)]
    ropes = [n.op.rope_dims for n in c.graph.nodes if getattr(n.op, "rope", False) for _ in "qk"]  # ONNX's op, both
    for g in (kv.graph, onnx.load(str(main)).graph):                                               # files
        rotary = [n for n in g.node if n.op_type == "RotaryEmbedding"]
        assert [next((a.i for a in n.attribute if a.name == "rotary_embedding_dim"), None) for n in rotary] == ropes
    assert c.report.phases["kv cache"] > 0


@pytest.mark.parametrize("bidirectional", [False, True])
def test_relative_position_buckets_are_recomputed_at_the_cached_positions(tmp_path: Path, bidirectional: bool) -> None:
    """T5's bucket table, scaled up so that a bias read at the wrong positions would move the logits far past the
    tolerance: the cache file still matches the full recompute step by step (a bidirectional table too: causal
    attention masks the keys after a query, whose buckets differ)."""
    from archc.export.kvcache import export_cache

    raw = json.loads(json.dumps(VARIANTS["t5_buckets"]))
    raw["layers"][2]["bidirectional"] = bidirectional
    c, out = build(tmp_path, raw)
    with torch.no_grad():
        c.module.get_submodule("bias").weight.normal_(0.0, 3.0)
    report = export_cache(c, c.module, out)
    assert isinstance(report, CacheReport) and report.steps >= 5, report
    tokens = np.random.default_rng(2).integers(0, 256, size=(2, CONTEXT)).astype(np.int64)
    with torch.no_grad():
        full = c.module(torch.from_numpy(tokens)).numpy()
    cuts = [0, 3, 4, 5, CONTEXT]
    for (a, b), got in zip(zip(cuts, cuts[1:]), ort_steps(cache_path(out), tokens, cuts)):
        np.testing.assert_allclose(got, full[:, a:b], atol=2e-5, rtol=1e-4)


def test_a_position_bias_read_otherwise_is_refused() -> None:
    """A position op's bias read by anything but a causal attention's bias_from (here: an activation between) is
    refused at the bias node."""
    raw = json.loads(json.dumps(VARIANTS["alibi"]))
    raw["layers"].insert(3, {"id": "twice", "op": "relu", "from": "bias"})
    for layer in raw["layers"]:
        if layer.get("bias_from"):
            layer["bias_from"] = "twice"
    c = run(compiled_from(raw), BUILD_PASSES[:4])
    why = refusal(c.graph, "language_model")
    assert why is not None and "layers[2]" in why.where and "read by 'twice'" in why.why


def test_a_score_bias_from_another_node_is_refused_at_the_attention() -> None:
    """bias_from naming a node that is no position op (an input, here): the cache graph cannot recompute it at the
    cached positions, so the attention that reads one is refused (with its location), not cached wrongly."""
    from archc.export.kvcache import _node_refusal

    raw = {"archc": 1, "model": {"name": "biased"}, "axes": {"seq": 6}, "task": {"kind": "regression"},
           "inputs": {"x": {"shape": ["seq", 8]}, "b": {"shape": [2, "seq", "seq"], "batched": False}},
           "layers": [{"id": "attn", "op": "attention", "num_heads": 2, "causal": True, "from": "x",
                       "bias_from": "b"}]}
    c = run(compiled_from(raw), BUILD_PASSES[:4])
    node = c.graph.node("attn")
    assert node.inputs == ["x", "b"]
    why = _node_refusal(node, c.graph)
    assert "bias_from = 'b'" in why and "alibi, relative_position_bias" in why and "no KV cache" in why
    plain = dict(raw["layers"][0], bias_from=None)
    assert _node_refusal(c.graph.node("attn").__class__("attn", type(node.op).model_validate(
        {k: v for k, v in plain.items() if k != "id"}), ["x"], node.where), c.graph) == ""
