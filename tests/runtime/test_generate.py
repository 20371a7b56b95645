"""archc.runtime.generate: byte-level generation with ONNX Runtime on tiny onnx.helper language models."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from archc.errors import InputError
from archc.runtime import GenerationResult, Model, generate
from archc.runtime.generate import signature

SHIFT = np.roll(np.eye(256, dtype=np.float32), 1, axis=1) * 20   # row t is one-hot at t + 1: "next byte = current + 1"
RANDOM = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32) * 2


def lm(path: Path, table: np.ndarray = SHIFT, seq: int | str = "seq", meta: dict | None = None) -> Model:
    """tokens int64 [batch, seq] → logits = table[tokens] float32 [batch, seq, vocab] (depends on each token only)."""
    vocab = table.shape[1]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "tokens"], ["logits"], axis=0)], "lm",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", seq])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", seq, vocab])],
        initializer=[numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))
    onnx.save(model, str(path))
    return Model.open(path, device="cpu")


@pytest.fixture
def shift(tmp_path: Path) -> Model:
    return lm(tmp_path / "shift.onnx")


@pytest.fixture
def noisy(tmp_path: Path) -> Model:
    return lm(tmp_path / "noisy.onnx", RANDOM)


def test_greedy_counts_up(shift: Model) -> None:
    r = generate(shift, "a", max_new_tokens=5, temperature=0)
    assert isinstance(r, GenerationResult)
    assert r.text == "bcdef" and r.tokens == [98, 99, 100, 101, 102] and r.new_tokens == 5
    assert r.seconds > 0 and r.tokens_per_second > 0
    assert generate(shift, "xyz", max_new_tokens=3, temperature=0).text == "{|}"   # continues from the last byte
    assert generate(shift, "", max_new_tokens=2, temperature=0).tokens == [11, 12]  # empty prompt: from "\n"
    assert generate(shift, "a", max_new_tokens=0).text == ""


def test_temperature_zero_is_deterministic(noisy: Model) -> None:
    runs = [generate(noisy, "hello", max_new_tokens=30, temperature=0, seed=s).tokens for s in (0, 1, None)]
    assert runs[0] == runs[1] == runs[2]
    # greedy follows the argmax of the current token's row
    tokens = [ord("o")] + runs[0]
    assert all(RANDOM[a].argmax() == b for a, b in zip(tokens, tokens[1:]))


def test_seed_reproducibility(noisy: Model) -> None:
    a = generate(noisy, "hi", max_new_tokens=60, temperature=1.0, seed=7)
    b = generate(noisy, "hi", max_new_tokens=60, temperature=1.0, seed=7)
    c = generate(noisy, "hi", max_new_tokens=60, temperature=1.0, seed=8)
    assert a.tokens == b.tokens and a.text == b.text
    assert a.tokens != c.tokens
    assert all(0 <= t < 256 for t in a.tokens)


def test_top_k(noisy: Model) -> None:
    greedy = generate(noisy, "q", max_new_tokens=40, temperature=0).tokens
    assert generate(noisy, "q", max_new_tokens=40, temperature=1.5, top_k=1, seed=3).tokens == greedy
    tokens = [ord("q")] + generate(noisy, "q", max_new_tokens=200, temperature=5.0, top_k=3, seed=3).tokens
    top3 = np.argsort(RANDOM, axis=1)[:, -3:]
    assert all(b in top3[a] for a, b in zip(tokens, tokens[1:]))
    assert len({b for b in tokens[1:]}) > 3                                # it does sample, not just argmax


def test_context_window(tmp_path: Path) -> None:
    model = lm(tmp_path / "ctx.onnx", meta={"archc.tokenizer": {"kind": "bytes", "vocab_size": 256, "context": 4}})
    assert signature(model).context == 4
    seen: list[tuple] = []
    real = model.run
    model.run = lambda feeds, **kw: (seen.append(feeds["tokens"].shape), real(feeds, **kw))[1]  # type: ignore
    r = generate(model, "abcdefg", max_new_tokens=3, temperature=0)
    assert r.text == "hij" and seen == [(1, 4)] * 3                         # only the last 4 tokens are fed
    # Context from the spec's axes when there is no tokenizer metadata; 256 when nothing says.
    spec = lm(tmp_path / "spec.onnx", meta={"archc.spec": {"axes": {"seq": 32}},
                                            "archc.inputs": {"tokens": {"shape": ["batch", "seq"], "dtype": "int64"}}})
    assert signature(spec).context == 32
    assert signature(lm(tmp_path / "plain.onnx")).context == 256


def test_fixed_length_input_is_right_padded(tmp_path: Path) -> None:
    model = lm(tmp_path / "fixed.onnx", seq=8)
    sig = signature(model)
    assert sig.context == 8 and sig.fixed_length
    assert generate(model, "a", max_new_tokens=10, temperature=0).text == "bcdefghijk"


def test_argument_errors(shift: Model) -> None:
    with pytest.raises(InputError, match="temperature"):
        generate(shift, "a", temperature=-0.5)
    with pytest.raises(InputError, match="top_k"):
        generate(shift, "a", top_k=0)
    with pytest.raises(InputError, match="max_new_tokens"):
        generate(shift, "a", max_new_tokens=-1)
    with pytest.raises(InputError, match="prompt"):
        generate(shift, b"a")  # type: ignore[arg-type]


def test_small_vocab_rejects_high_bytes(tmp_path: Path) -> None:
    model = lm(tmp_path / "small.onnx", np.roll(np.eye(128, dtype=np.float32), 1, axis=1) * 20)
    assert generate(model, "a", max_new_tokens=2, temperature=0).text == "bc"
    with pytest.raises(InputError, match="vocabulary size 128"):
        generate(model, "é", max_new_tokens=2)


def test_non_lm_refused(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["logits"])], "clf",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
                              initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "clf.onnx"))
    with pytest.raises(InputError, match=r"expected a language model with int64 tokens \[batch, seq\].*received"):
        generate(Model.open(tmp_path / "clf.onnx", device="cpu"), "a")


def test_no_torch_import(tmp_path: Path) -> None:
    lm(tmp_path / "shift.onnx")
    code = ("import sys\nfrom archc.runtime import Model\nfrom archc.runtime.generate import generate\n"
            f"r = generate(Model.open({str(tmp_path / 'shift.onnx')!r}, device='cpu'), 'a', 3, temperature=0)\n"
            "assert r.text == 'bcd', r.text\nassert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_window_is_the_recorded_bound(tmp_path: Path) -> None:
    """A position table of 16 rows recorded in archc.bounds: the window stops at 16 (the default 256 made the 14th
    token of a 3-byte prompt a 17-position input the model refuses)."""
    bounds = {"axes": {"seq": {"min": 1, "max": 16, "why": "layers[1] (pos): max_len = 16"}}, "vocab": {}}
    model = lm(tmp_path / "bounded.onnx", meta={"archc.bounds": bounds})
    assert signature(model).context == 16
    out = generate(model, "abc", max_new_tokens=40, temperature=0)
    assert out.tokens == [(ord("c") + 1 + i) % 256 for i in range(40)]
    # an [axes] entry or a tokenizer context above the bound is capped too
    spec = lm(tmp_path / "axes.onnx", meta={"archc.bounds": bounds, "archc.spec": {"axes": {"seq": 64}},
                                            "archc.tokenizer": {"kind": "bytes", "context": 100}})
    assert signature(spec).context == 16


def test_a_prompt_shorter_than_the_layers_need_is_refused_before_generating(tmp_path: Path) -> None:
    bounds = {"axes": {"seq": {"min": 5, "max": None, "why": "layers[3] (s): index 4"}}, "vocab": {}}
    model = lm(tmp_path / "low.onnx", meta={"archc.bounds": bounds})
    with pytest.raises(InputError, match=r"prompt: expected at least 5 bytes \(the model's layers need axis 'seq' "
                                         r"of at least 5\), received 3"):
        generate(model, "abc", max_new_tokens=4)
    assert generate(model, "abcde", max_new_tokens=4, temperature=0).text == "fghi"
