"""GPT-2 loaded with `archc build --weights --map --tokenizer`: a small transformers GPT2LMHeadModel (random weights,
no download) and a byte-level BPE trained in the test generate through `archc infer --prompt --temperature 0` the
text that transformers' tokenizer (PreTrainedTokenizerFast on the same file) and model's greedy `generate` give;
the tokenizer is copied beside the model and named in its metadata; a tokenizer with more ids than the model's
vocabulary, or one given to another task, is refused with one located message."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.cli import main
from tests.weights.conftest import ZOO, _randomize

transformers = pytest.importorskip("transformers")

VOCAB = 320
CORPUS = ("the quick brown fox jumps over the lazy dog. " * 3 + "a model of text predicts the next token of text; "
          "tokens are pieces of words, and the tokenizer joins bytes that often follow each other. ") * 20
PROMPTS = ["the quick brown", "tokens are pieces"]
NEW = 12


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    import torch

    from archc.data.tokenizer_file import train_bpe

    folder = tmp_path_factory.mktemp("gpt2tok")
    (folder / "bpe.json").write_text(train_bpe([CORPUS], VOCAB))
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=64,
                                     bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(config).eval()
    _randomize(hf, 3)
    hf.save_pretrained(folder / "hf")
    raw = tomllib.loads((ZOO / "gpt2.toml").read_text())
    raw["params"].update({"vocab": VOCAB, "context": 64, "dim": 64, "heads": 4, "layers": 2, "pdrop": 0.0})
    raw["inputs"]["tokens"]["vocab"] = VOCAB
    raw["axes"]["seq"] = 16
    (folder / "gpt2.json").write_text(json.dumps(raw))
    return hf, folder


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def _build(run_cli, folder: Path, out: Path, tokenizer: Path, spec: str = "gpt2.json"):
    return run_cli("build", str(folder / spec), "-o", str(out), "--weights", str(folder / "hf" / "model.safetensors"),
                   "--map", str(ZOO / "gpt2.weights.toml"), "--tokenizer", str(tokenizer), "--no-optimize")


def test_greedy_text_equals_transformers(gpt2, tmp_path):
    import torch

    hf, folder = gpt2
    out = tmp_path / "pkg" / "model.onnx"
    built = _build(run_cli, folder, out, folder / "bpe.json")
    assert built.exit_code == 0, built.stderr
    copied = out.parent / "tokenizer.json"
    assert copied.read_bytes() == (folder / "bpe.json").read_bytes()
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    tok_meta = json.loads(meta["archc.tokenizer"])
    assert tok_meta["kind"] == "tokenizers" and tok_meta["file"] == "tokenizer.json" and tok_meta["vocab_size"] == VOCAB
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "bpe.json"))
    for prompt in PROMPTS:
        ids = fast(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, do_sample=False,
                              pad_token_id=0)
        want = fast.decode(ref[0, ids.shape[1]:].tolist())
        new = ref[0, ids.shape[1]:].tolist()
        assert len(set(new)) > 1, "a degenerate continuation would prove little"
        got = run_cli("infer", str(out), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", str(NEW),
                      "--json")
        assert got.exit_code == 0, got.stderr
        answer = json.loads(got.stdout)
        assert answer["prompt_tokens"] == ids[0].tolist(), (answer["prompt_tokens"], ids[0].tolist())
        assert answer["tokens"] == new, (answer["tokens"], new)
        text = run_cli("infer", str(out), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", str(NEW))
        assert want in text.stdout, (want, text.stdout)


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(gpt2, tmp_path):
    from archc.data.tokenizer_file import train_bpe

    _, folder = gpt2
    big = tmp_path / "big.json"
    big.write_text(train_bpe([CORPUS * 3 + " ".join(f"w{i}x{i * 7}" for i in range(400))], VOCAB + 80))
    from archc.data.tokenizer_file import read

    assert read(big, "t").vocab_size > VOCAB
    out = tmp_path / "m" / "model.onnx"
    got = _build(run_cli, folder, out, big)
    assert got.exit_code == 1, got.stderr
    assert "--tokenizer" in got.stderr and f"vocab = {VOCAB}" in got.stderr and "Traceback" not in got.stderr
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_another_task_or_a_users_file_is_refused(gpt2, tmp_path):
    _, folder = gpt2
    out = tmp_path / "m" / "model.onnx"
    out.parent.mkdir()
    (out.parent / "tokenizer.json").write_text("{}")  # the user's own file of that name: never replaced
    got = _build(run_cli, folder, out, folder / "bpe.json")
    assert got.exit_code == 1 and "tokenizer.json" in got.stderr, got.stderr
    assert (out.parent / "tokenizer.json").read_text() == "{}" and not out.exists()
    spec = Path(__file__).resolve().parents[2] / "specs" / "digit_classifier.toml"
    got = run_cli("build", str(spec), "-o", str(tmp_path / "d.onnx"), "--tokenizer", str(folder / "bpe.json"))
    assert got.exit_code == 1 and "expected a language_model spec" in got.stderr, got.stderr
