"""text: sources with a tokenizer.json (Hugging Face `tokenizers`): `archc tokenizer train`, ids equal to
transformers' PreTrainedTokenizerFast on the same file, validate's vocabulary check, the token-file cache key, and a
small decoder trained, exported and run by `archc infer --prompt` through the tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.data import load
import archc.data.tokenizer_file as tokenizer_file
from archc.data.tokenizer_file import read

transformers = pytest.importorskip("transformers")

CONTEXT = 12
VOCAB = 320


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_corpus(folder: Path, files: int = 5) -> Path:
    """A few small 'Python' files with spaces, blank lines, non-ASCII text and the special token's text."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        lines = [f"def f{j}(x):  # café {int(rng.integers(100))}\n    return x + {int(rng.integers(10))}\n\n"
                 for j in range(25)]
        (folder / f"m{i}.py").write_text("".join(lines) + ("<|endoftext|>" if i % 2 else "  \n"), encoding="utf-8")
    return folder


def train_tokenizer(corpus: Path, out: Path, vocab: int = VOCAB) -> Path:
    r = cli("tokenizer", "train", f"text:{corpus}", "--vocab-size", vocab, "-o", out)
    assert r.exit_code == 0, r.output
    return out


def lm_spec(data: str, vocab: int = VOCAB, rows: int | None = None, declare: bool = True) -> dict:
    """A tiny GPT: embedding, learned positions, one causal attention, tied output projection."""
    inputs: dict = {"shape": ["seq"], "dtype": "int64"} | ({"vocab": vocab} if declare else {})
    return {
        "archc": 1, "model": {"name": "tiny-bpe-lm"},
        "inputs": {"tokens": inputs}, "axes": {"seq": CONTEXT}, "task": {"kind": "language_model"},
        "layers": [
            {"id": "emb", "op": "embedding", "num_embeddings": rows or vocab, "embedding_dim": 16},
            {"id": "pos", "op": "pos_embedding", "max_len": CONTEXT + 4},
            {"id": "attn", "op": "attention", "num_heads": 2, "causal": True},
            {"id": "norm", "op": "rmsnorm"},
            {"id": "logits", "op": "tied_linear", "tie": "emb"},
        ],
        "train": {"epochs": 1, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 3e-3}},
        "data": {"source": data, "val_fraction": 0.2, "test_fraction": 0.2},
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus folder, tokenizer.json trained on it by `archc tokenizer train`)."""
    root = tmp_path_factory.mktemp("bpe")
    corpus = make_corpus(root / "corpus")
    return corpus, train_tokenizer(corpus, root / "tok.json")


def fast(path: Path):
    return transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))


# --- the command -------------------------------------------------------------------------------------------------

def test_train_writes_a_byte_level_bpe_and_refuses_to_replace_it(made, tmp_path: Path):
    corpus, tok = made
    config = json.loads(tok.read_text())
    assert config["model"]["type"] == "BPE" and config["pre_tokenizer"]["type"] == "ByteLevel"
    assert read(tok, "t").vocab_size == VOCAB and len(config["model"]["merges"]) > 0
    out = tmp_path / "t.json"
    out.write_text("mine")
    r = cli("tokenizer", "train", f"text:{corpus}", "--vocab-size", VOCAB, "-o", out)
    assert r.exit_code == 1 and "which exists" in r.output and "--force" in r.output
    assert out.read_text() == "mine"
    r = cli("tokenizer", "train", f"text:{corpus}", "--vocab-size", VOCAB, "-o", out, "--force")
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == tok.read_bytes()  # the same corpus trains the same tokenizer
    assert (tmp_path / "t.json.old-1").read_text() == "mine"
    r = cli("tokenizer", "train", f"text:{corpus}", "--vocab-size", 100, "-o", tmp_path / "u.json")
    assert r.exit_code == 1 and "--vocab-size: expected at least 257" in r.output
    assert not (tmp_path / "u.json").exists()


# --- the ids -----------------------------------------------------------------------------------------------------

def test_token_file_ids_equal_pretrained_tokenizer_fast(made):
    corpus, tok = made
    data = load(f"text:{corpus}?tokenizer={tok}", context=CONTEXT)
    reference = fast(tok)
    for split in ("train", "val", "test"):
        text = "\n".join((corpus / name).read_text(encoding="utf-8") for name in data.files[split])
        assert data.text[split].dtype == np.uint16
        assert data.text[split].tolist() == reference.encode(text, add_special_tokens=False), split
    assert data.tokenizer == {"kind": "tokenizers", "file": "tokenizer.json", "sha256": read(tok, "t").sha256,
                              "vocab_size": VOCAB, "context": CONTEXT}
    x, y = data.train.x, data.train.y
    assert x.shape[1] == CONTEXT and np.array_equal(x[:, 1:], y[:, :-1])


@pytest.mark.parametrize("tail", [40, tokenizer_file.TAIL_CHARS])
def test_encoding_in_chunks_equals_the_whole_text(made, monkeypatch, tail: int):
    """A chunk boundary anywhere (in a word, a whitespace run, the special token) leaves the ids unchanged, also
    when only a short end of each chunk is pre-tokenized to find the cut."""
    monkeypatch.setattr(tokenizer_file, "TAIL_CHARS", tail)
    corpus, tok = made
    codec = read(tok, "t")
    text = "".join((corpus / f"m{i}.py").read_text(encoding="utf-8") for i in range(5))
    raw = text.encode("utf-8")
    whole = fast(tok).encode(text, add_special_tokens=False)
    for size in (1, 5, 64, 999):
        ids = np.concatenate(list(codec.encode_stream(raw[i:i + size] for i in range(0, len(raw), size))))
        assert ids.tolist() == whole, size


def test_cache_key_changes_with_the_tokenizer(made, tmp_path: Path):
    corpus, tok = made
    cache = tmp_path / "cache"
    first = load(f"text:{corpus}?tokenizer={tok}&cache={cache}", context=CONTEXT)
    again = load(f"text:{corpus}?tokenizer={tok}&cache={cache}", context=CONTEXT)
    assert again.token_file == first.token_file
    other = train_tokenizer(corpus, tmp_path / "other.json", vocab=VOCAB - 40)
    changed = load(f"text:{corpus}?tokenizer={other}&cache={cache}", context=CONTEXT)
    assert changed.token_file != first.token_file
    assert changed.text["train"].tolist() == fast(other).encode(
        "\n".join((corpus / n).read_text(encoding="utf-8") for n in changed.files["train"]), add_special_tokens=False)
    edited = tmp_path / "edited.json"  # same vocabulary size, other content: another key
    config = json.loads(tok.read_text())
    config["added_tokens"][0]["content"] = "<|end|>"
    config["model"]["vocab"]["<|end|>"] = config["model"]["vocab"].pop("<|endoftext|>")
    edited.write_text(json.dumps(config))
    assert load(f"text:{corpus}?tokenizer={edited}&cache={cache}", context=CONTEXT).token_file \
        not in (first.token_file, changed.token_file)
    bytes_ = load(f"text:{corpus}?cache={cache}", context=CONTEXT)
    assert bytes_.text["train"].dtype == np.uint8 and bytes_.tokenizer["kind"] == "bytes"


# --- validate ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("declare", [True, False])
def test_validate_refuses_a_tokenizer_larger_than_the_embedding(made, tmp_path: Path, declare: bool):
    corpus, tok = made
    spec = tmp_path / "lm.json"
    spec.write_text(json.dumps(lm_spec(f"text:{corpus}?tokenizer={tok}", vocab=256, declare=declare)))
    r = cli("validate", spec)
    assert r.exit_code == 1
    assert f"inputs.tokens: language_model on text:{corpus}?tokenizer={tok} expects input 'tokens' to take " \
           f"{VOCAB} token ids (0..{VOCAB - 1}), received vocab = 256" in r.output
    assert "Traceback" not in r.output
    spec.write_text(json.dumps(lm_spec(f"text:{corpus}?tokenizer={tok}", vocab=VOCAB, declare=declare)))
    assert cli("validate", spec).exit_code == 0


def test_validate_reads_the_tokenizer_beside_the_spec_and_refuses_a_bad_one(made, tmp_path: Path):
    corpus, tok = made
    (tmp_path / "tok.json").write_bytes(tok.read_bytes())
    (tmp_path / "bad.json").write_text('{"model": 3}')
    spec = tmp_path / "lm.json"
    spec.write_text(json.dumps(lm_spec(f"text:{corpus}?tokenizer=tok.json")))
    assert cli("validate", spec).exit_code == 0
    spec.write_text(json.dumps(lm_spec(f"text:{corpus}?tokenizer=bad.json")))
    r = cli("validate", spec)
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert "data.source: expected a tokenizer.json in the Hugging Face tokenizers format, received " in r.output
    # a missing file is train's to report, as a missing corpus is (validate reads no data): one line, exit 1
    spec.write_text(json.dumps(lm_spec(f"text:{corpus}?tokenizer=none.json")))
    assert cli("validate", spec).exit_code == 0
    r = cli("train", spec, "--out", tmp_path / "run")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "expected a tokenizer.json file, received 'none.json', which does not exist" in r.output
    assert not (tmp_path / "run").exists()


# --- train, export, infer ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(made, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny decoder trained one epoch on the corpus through the tokenizer: its run folder."""
    import torch

    corpus, tok = made
    root = tmp_path_factory.mktemp("run")
    (root / "corpus").symlink_to(corpus)
    (root / "tok.json").write_bytes(tok.read_bytes())
    (root / "lm.json").write_text(json.dumps(lm_spec("text:corpus?tokenizer=tok.json")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = CliRunner().invoke(main, ["train", str(root / "lm.json"), "--out", str(root / "run"), "--quiet"],
                               catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    return root / "run"


def test_the_run_and_its_export_carry_the_tokenizer(run: Path, made, tmp_path: Path):
    _, tok = made
    assert (run / "tokenizer.json").read_bytes() == tok.read_bytes()
    meta = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert json.loads(meta["archc.tokenizer"]) == {"kind": "tokenizers", "file": "tokenizer.json",
                                                   "sha256": read(tok, "t").sha256, "vocab_size": VOCAB,
                                                   "context": CONTEXT}
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    r = cli("export", run, "--checkpoint", "last", "-o", out)
    assert r.exit_code == 0, r.output
    assert (out.parent / "tokenizer.json").read_bytes() == tok.read_bytes()
    other = tmp_path / "other" / "m.onnx"  # another tokenizer.json there is never replaced
    other.parent.mkdir()
    (other.parent / "tokenizer.json").write_text("{}")
    r = cli("export", run, "--checkpoint", "last", "-o", other)
    assert r.exit_code == 1 and "expected no other tokenizer.json beside the exported model" in r.output
    assert (other.parent / "tokenizer.json").read_text() == "{}" and not other.exists()


@pytest.mark.parametrize("cache", [(), ("--no-cache",)])
def test_infer_prompt_encodes_and_decodes_through_the_tokenizer(run: Path, made, cache: tuple):
    _, tok = made
    prompt = "def f3(x):  # café"
    r = cli("infer", run / "model.onnx", "--prompt", prompt, "--max-new-tokens", 2 * CONTEXT, "--temperature", 0,
            "--json", *cache)
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    reference = fast(tok)
    assert got["prompt_tokens"] == reference.encode(prompt)
    assert len(got["tokens"]) == 2 * CONTEXT and max(got["tokens"]) < VOCAB
    assert got["text"] == reference.decode(got["tokens"])


def test_infer_refuses_a_tokenizer_that_is_not_the_models(run: Path, tmp_path: Path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("model.onnx", "model.kv.onnx"):
        (folder / name).write_bytes((run / name).read_bytes())
    r = cli("infer", folder / "model.onnx", "--prompt", "def")
    assert r.exit_code == 1 and "expected a tokenizer.json file" in r.output and "does not exist" in r.output
    config = json.loads((run / "tokenizer.json").read_text())
    config["added_tokens"][0]["content"] = "<|end|>"
    (folder / "tokenizer.json").write_text(json.dumps(config))
    r = cli("infer", folder / "model.onnx", "--prompt", "def")
    assert r.exit_code == 1 and "expected the tokenizer.json the model was trained with" in r.output, r.output


def test_infer_refuses_prompt_ids_beyond_the_models_vocabulary(run: Path, made, tmp_path: Path):
    """A tokenizer whose ids exceed the model's rows (here one trained larger, recorded as the model's)."""
    corpus, _ = made
    folder = tmp_path / "big"
    folder.mkdir()
    big = train_tokenizer(corpus, folder / "tokenizer.json", vocab=VOCAB + 200)
    model = onnx.load(str(run / "model.onnx"))
    for p in model.metadata_props:
        if p.key == "archc.tokenizer":
            p.value = json.dumps(json.loads(p.value) | {"sha256": read(big, "b").sha256, "vocab_size": VOCAB + 200})
    onnx.save(model, str(folder / "model.onnx"))
    prompt = (corpus / "m0.py").read_text(encoding="utf-8")[:200]
    ids = fast(big).encode(prompt)
    assert max(ids) >= VOCAB  # the larger tokenizer's merges are used on its own corpus
    r = cli("infer", folder / "model.onnx", "--prompt", prompt, "--no-cache")
    assert r.exit_code == 1
    assert f"prompt: expected tokens below the model's vocabulary size {VOCAB}, received token {max(ids)}" in r.output
