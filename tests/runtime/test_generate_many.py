"""archc.runtime.generate_many: several prompts batched through the KV-cache graph give each prompt exactly the
tokens it gets alone (learned positions and RoPE/GQA decoders, prompts of different lengths, past the window);
top-p and the repetition penalty against transformers' own processors; stop strings, max time, the text stream
and the prompts file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from archc.errors import InputError
from archc.pipeline import BUILD_PASSES, BuildOptions, compiled_from, run
from archc.runtime import Model, generate
from archc.runtime.generate import Sampling, TextStream, generate_many, penalize, read_prompts, warp
from archc.runtime.kvcache import CachedLM

CONTEXT = 10
EMB = {"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 16}
TIED = {"id": "logits", "op": "tied_linear", "tie": "emb"}


def block(i: int, **attn: object) -> list[dict]:
    x = "pos" if i == 0 else f"r{i - 1}b"
    return [{"id": f"n{i}a", "op": "layernorm", "from": x},
            {"id": f"a{i}", "op": "attention", "num_heads": 4, "causal": True, **attn},
            {"id": f"r{i}a", "op": "add", "from": [x, f"a{i}"]},
            {"id": f"n{i}b", "op": "rmsnorm"},
            {"id": f"m{i}", "op": "gated_mlp", "hidden_features": 24},
            {"id": f"r{i}b", "op": "add", "from": [f"r{i}a", f"m{i}"]}]


def spec(*layers: dict) -> dict:
    return {"archc": 1, "model": {"name": "batch-lm"},
            "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}},
            "axes": {"seq": CONTEXT}, "task": {"kind": "language_model"}, "layers": [EMB, *layers, TIED]}


VARIANTS = {
    "learned": spec({"id": "pos", "op": "pos_embedding", "max_len": CONTEXT}, *block(0), *block(1)),
    "rope_gqa": spec({"id": "pos", "op": "dropout", "p": 0.0}, *block(0, rope=True, num_kv_heads=2, bias=False),
                     *block(1, rope=True, num_kv_heads=1)),
}
PROMPTS = ["a", "hello", "hell", "xy", "hello", "a longer one"]   # 1..12 bytes: some past the 10-byte window


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Model:
    out = tmp_path_factory.mktemp(request.param) / "model.onnx"
    run(compiled_from(VARIANTS[request.param], options=BuildOptions(seed=5, output=out)), BUILD_PASSES)
    assert out.with_name("model.kv.onnx").is_file()
    return Model.open(out, device="cpu")


def table_lm(path: Path, table: np.ndarray | None = None) -> Model:
    """tokens [batch, seq] -> logits = table[tokens] (each position's logits depend on its token only); the default
    table makes the next byte the current one + 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.roll(np.eye(256, dtype=np.float32), 1, axis=1) * 20 if table is None else table
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "tokens"], ["logits"], axis=0)], "lm",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 256])],
        initializer=[numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return Model.open(path, device="cpu")


def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Records every KV-graph run's feed shape [batch, new]."""
    shapes: list[tuple[int, int]] = []
    original = CachedLM.run

    def spy(self, tokens, past):  # noqa: ANN001, ANN202
        shapes.append(tokens.shape)
        return original(self, tokens, past)

    monkeypatch.setattr(CachedLM, "run", spy)
    return shapes


@pytest.mark.parametrize("new", [3, 12])  # 12: every prompt slides past the window (batched recompute)
def test_batched_greedy_tokens_equal_each_prompt_alone(lm: Model, new: int, monkeypatch: pytest.MonkeyPatch) -> None:
    alone = [generate(lm, p, new, temperature=0) for p in PROMPTS]
    assert all(r.cached for r in alone)
    shapes = batch_sizes(monkeypatch)
    batched = generate_many(lm, PROMPTS, new, Sampling(temperature=0))
    assert [r.tokens for r in batched] == [r.tokens for r in alone]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.prompt_tokens for r in batched] == [list(p.encode()) for p in PROMPTS]
    assert max(b for b, _ in shapes) > 1                         # rows did run together
    singles = sum(len(r.tokens) for r in alone)
    assert len(shapes) < singles                                 # fewer runs than the prompts alone


def test_batched_sampling_equals_each_prompt_alone_under_its_seed(lm: Model) -> None:
    how = dict(temperature=0.9, top_k=50, top_p=0.9, repetition_penalty=1.3)
    alone = [generate(lm, p, 8, seed=7, **how).tokens for p in PROMPTS]
    batched = generate_many(lm, PROMPTS, 8, Sampling(**how), seed=7)
    assert [r.tokens for r in batched] == alone
    assert generate_many(lm, PROMPTS, 8, Sampling(**how), seed=7)[2].tokens == alone[2]   # reproducible
    assert alone != [generate(lm, p, 8, seed=8, **how).tokens for p in PROMPTS]          # the seed matters


def test_batched_recompute_equals_alone_without_the_cache(lm: Model) -> None:
    alone = [generate(lm, p, 6, temperature=0, cache=False).tokens for p in PROMPTS]
    batched = generate_many(lm, PROMPTS, 6, Sampling(temperature=0), cache=False)
    assert [r.tokens for r in batched] == alone and not batched[0].cached
    assert alone == [generate(lm, p, 6, temperature=0).tokens for p in PROMPTS]       # and equal to the cache's


def test_results_carry_timings_and_why_they_ended(lm: Model) -> None:
    rs = generate_many(lm, ["ab", "abcd"], 5, Sampling(temperature=0))
    for r in rs:
        assert r.new_tokens == 5 and r.finish == "length" and r.stop is None
        assert 0 < r.prompt_seconds <= r.seconds and r.tokens_per_second > 0
    timed = generate_many(lm, ["ab", "abcd"], 10_000, Sampling(temperature=0), max_time=0.05)
    assert all(r.finish == "time" and r.new_tokens < 10_000 for r in timed)


def transformers_scores(logits: np.ndarray, ids: list[int], penalty: float, temperature: float,
                        top_p: float) -> np.ndarray:
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopPLogitsWarper

    x = torch.tensor(logits[None], dtype=torch.float64)
    inputs = torch.tensor([ids])
    x = RepetitionPenaltyLogitsProcessor(penalty)(inputs, x)
    x = TemperatureLogitsWarper(temperature)(inputs, x)
    return TopPLogitsWarper(top_p)(inputs, x)[0].numpy()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("top_p, penalty", [(0.9, 1.0), (0.5, 1.3), (0.05, 0.8), (1.0, 2.0)])
def test_penalty_and_top_p_match_transformers(seed: int, top_p: float, penalty: float) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=300) * 3
    ids = list(rng.integers(0, 300, size=40))
    seen = np.zeros(300, dtype=bool)
    seen[ids] = True
    ours = warp(penalize(logits, seen, penalty), Sampling(temperature=0.7, top_p=top_p))
    ref = transformers_scores(logits, ids, penalty, 0.7, top_p)
    assert np.array_equal(np.isinf(ours), np.isinf(ref))
    kept = ~np.isinf(ref)
    assert 1 <= kept.sum() < (300 if top_p < 1 else 301)
    np.testing.assert_allclose(ours[kept], ref[kept], rtol=1e-12)


def test_greedy_penalty_avoids_repeats(tmp_path: Path) -> None:
    loop = np.zeros((256, 256), np.float32)
    loop[:, ord("a")] = 5            # always "a"; then "b"
    loop[:, ord("b")] = 4
    m = table_lm(tmp_path / "loop.onnx", loop)
    assert generate(m, "x", 3, temperature=0).text == "aaa"
    # "a" seen: 5 / 3 < 4, so "b"; then both seen: 5 / 3 > 4 / 3, so "a" again (the penalty does not grow)
    assert generate(m, "x", 3, temperature=0, repetition_penalty=3.0).text == "aba"
    assert generate(m, "x", 3, temperature=0, repetition_penalty=1.2).text == "aaa"     # 5 / 1.2 > 4


def test_stop_strings_cut_the_text_and_keep_the_ids(tmp_path: Path) -> None:
    shift = table_lm(tmp_path / "shift.onnx")                    # next byte = current + 1
    r = generate(shift, "a", 20, temperature=0, stop=["ef", "zz"])
    assert (r.text, r.finish, r.stop) == ("bcd", "stop", "ef") and r.tokens == [98, 99, 100, 101, 102]
    rs = generate_many(shift, ["a", "m", "x"], 6, Sampling(temperature=0), stop=["e", "p"])
    assert [(r.text, r.finish) for r in rs] == [("bcd", "stop"), ("no", "stop"), ("yz{|}~", "length")]
    seen: list[tuple[int, str]] = []
    generate_many(shift, ["a", "mn"], 2, Sampling(temperature=0), on_text=lambda i, t: seen.append((i, t)))
    assert sorted(seen) == [(0, "b"), (0, "bc"), (1, "o"), (1, "op")]


def test_text_stream_holds_back_partial_characters_and_stop_prefixes() -> None:
    out: list[str] = []
    s = TextStream(out.append, stop=["END"])
    for text in ["ab", "abE", "abEN", "abENx", "abENx\ufffd", "abENxé", "abENxé\ufffd\ufffd"]:
        s.update(text)
    assert out == ["ab", "ENx", "é", "\ufffd"]       # an invalid byte shows once the next character is made
    s.close("abENxé\ufffd\ufffd!")
    assert "".join(out) == "abENxé\ufffd\ufffd!"


def test_argument_errors_name_the_argument(tmp_path: Path) -> None:
    m = table_lm(tmp_path / "m.onnx")
    for kwargs, where in [({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
                          ({"repetition_penalty": 0.0}, "repetition_penalty"), ({"stop": [""]}, "stop"),
                          ({"max_time": 0}, "max_time"), ({"temperature": -1}, "temperature")]:
        with pytest.raises(InputError, match=where):
            generate(m, "a", 2, **kwargs)
    with pytest.raises(InputError, match="prompts"):
        generate_many(m, [], 2)


def test_read_prompts(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("first line\n\n  second \r\nthird")
    assert read_prompts(tmp_path / "p.txt") == ["first line", "  second ", "third"]
    (tmp_path / "p.jsonl").write_text('"one"\n{"prompt": "two\\nlines"}\n\n""\n')
    assert read_prompts(tmp_path / "p.jsonl") == ["one", "two\nlines", ""]
    (tmp_path / "bad.jsonl").write_text('"ok"\n{"text": 1}\n')
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "bytes.txt").write_bytes(b"ok\n\xff\n")
    for name, message in [("bad.jsonl", "line 2: expected a JSON string"), ("empty.txt", "at least one prompt"),
                          ("bytes.txt", "line 2: expected UTF-8"), ("missing.txt", "readable file")]:
        with pytest.raises(InputError, match=message):
            read_prompts(tmp_path / name)
