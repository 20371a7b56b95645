"""The export folder of a decoder is an ONNX Runtime GenAI package (archc.export.genai): its byte tokenizer.json
encodes exactly archc's byte ids, onnxruntime_genai loads the folder unmodified and its greedy tokens equal
`archc infer --prompt --temperature 0`, and no file archc did not write is replaced.

onnxruntime_genai runs in its own environment (.venv-genai, which `make test` builds: its onnxruntime must not
replace .venv's onnxruntime-gpu), through tests/export/genai_client.py in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from archc.cli import main
from archc.export.genai import CONFIG, TOKENIZER, TOKENIZER_CONFIG, byte_tokenizer
from archc.export.kvcache import CacheReport, describe_package
from archc.pipeline import BUILD_PASSES, BuildOptions, compiled_from, run

ROOT = Path(__file__).resolve().parents[2]
GENAI_PYTHON = ROOT / ".venv-genai" / "bin" / "python"
CLIENT = Path(__file__).with_name("genai_client.py")
CONTEXT = 40
PROMPTS = ["héllo, wörld ✓", "def f(x):\n", "a"]
TEXTS = ["", "plain ascii", "héllo ✓ 🙂", "tabs\tand\nnewlines\r\n", "\x00\x01\x7f byte edges \xff",
         "  leading and  double  spaces ", "<|endoftext|>"]


def spec(pos: dict, attn: dict, context: int = CONTEXT) -> dict:
    """Two pre-norm blocks and an untied head (a tied head of random weights repeats its input token)."""
    layers = [{"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 16}, {"id": "pos", **pos}]
    for i in range(2):
        x = "pos" if i == 0 else f"r{i - 1}b"
        layers += [{"id": f"n{i}a", "op": "layernorm", "from": x},
                   {"id": f"a{i}", "op": "attention", "num_heads": 4, "causal": True, **attn},
                   {"id": f"r{i}a", "op": "add", "from": [x, f"a{i}"]},
                   {"id": f"n{i}b", "op": "rmsnorm"},
                   {"id": f"m{i}", "op": "gated_mlp", "hidden_features": 24},
                   {"id": f"r{i}b", "op": "add", "from": [f"r{i}a", f"m{i}"]}]
    layers += [{"id": "norm", "op": "rmsnorm"}, {"id": "logits", "op": "linear", "out_features": 256}]
    return {"archc": 1, "model": {"name": "genai-lm"},
            "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}},
            "axes": {"seq": context}, "task": {"kind": "language_model"}, "layers": layers}


VARIANTS = {
    "learned": spec({"op": "pos_embedding", "max_len": CONTEXT + 8}, {}),                  # GPT-2 style
    "rope": spec({"op": "dropout", "p": 0.0}, {"rope": True, "bias": False}),               # RoPE, 4 kv heads
    "gqa": spec({"op": "dropout", "p": 0.0}, {"rope": True, "num_kv_heads": 2, "fused_qkv": True}),  # Llama style
}


def build(folder: Path, raw: dict, seed: int = 0):
    """Build `raw` into folder/model.onnx, its seeded weight matrices scaled by 3: an untrained model at the usual
    scale repeats one token, these continue each prompt differently (a comparison that can fail)."""
    folder.mkdir(parents=True, exist_ok=True)
    c = run(compiled_from(raw, options=BuildOptions(seed=seed, output=folder / "model.onnx")), BUILD_PASSES, "lower")
    with torch.no_grad():
        for p in c.module.parameters():
            if p.ndim >= 2:
                p.mul_(3.0)
    return run(c, BUILD_PASSES)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    folder = tmp_path_factory.mktemp(request.param)
    c = build(folder, VARIANTS[request.param], seed=len(request.param))
    assert isinstance(c.report.kvcache, CacheReport), c.report.kvcache
    return request.param, folder


def genai(folder: Path, max_new: int, *prompts: str) -> list[dict]:
    """onnxruntime_genai's greedy generation of each prompt from the package folder (in .venv-genai)."""
    if not GENAI_PYTHON.is_file():
        pytest.skip(f"no {GENAI_PYTHON.relative_to(ROOT)} (onnxruntime-genai's own environment): `make test` "
                    "builds it")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run([str(GENAI_PYTHON), str(CLIENT), str(folder), str(max_new), *prompts], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)["prompts"]


def archc_infer(model: Path, prompt: str, max_new: int) -> dict:
    """`archc infer MODEL --prompt PROMPT --temperature 0 --json`'s answer."""
    r = CliRunner().invoke(main, ["infer", str(model), "--prompt", prompt, "--max-new-tokens", str(max_new),
                                  "--temperature", "0", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def archc_tokens(model: Path, prompt: str, max_new: int) -> list[int]:
    return archc_infer(model, prompt, max_new)["tokens"]


def until_eos(tokens: list[int], eos: int) -> list[int]:
    """What GenAI generates of archc's greedy tokens: up to and including the first eos (GenAI stops there)."""
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


@pytest.mark.parametrize("vocab", [256, 300])
def test_byte_tokenizer_encodes_the_utf8_bytes(vocab: int) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    text = json.dumps(byte_tokenizer(vocab))
    tok = tokenizers.Tokenizer.from_str(text)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_str(text))
    for t in TEXTS[:-1]:
        assert tok.encode(t).ids == list(t.encode("utf-8")), t
        assert fast(t)["input_ids"] == list(t.encode("utf-8")), t
        assert tok.decode(list(t.encode("utf-8"))) == t
    special = tok.encode(TEXTS[-1]).ids
    assert special == ([256] if vocab > 256 else list(TEXTS[-1].encode())), special
    assert tok.get_vocab_size(with_added_tokens=True) == (257 if vocab > 256 else 256)


def test_package_files_describe_the_model(built: tuple[str, Path]) -> None:
    name, folder = built
    for f in (CONFIG, TOKENIZER, TOKENIZER_CONFIG, "model.onnx", "model.kv.onnx"):
        assert (folder / f).is_file(), f
    config = json.loads((folder / CONFIG).read_text())
    model, decoder = config["model"], config["model"]["decoder"]
    assert model["type"] == "decoder" and model["vocab_size"] == 256 and decoder["filename"] == "model.kv.onnx"
    assert model["context_length"] == CONTEXT == config["search"]["max_length"]
    assert model["eos_token_id"] == model["bos_token_id"] == model["pad_token_id"] == 0  # 256 ids: NUL
    assert (decoder["num_hidden_layers"], decoder["num_attention_heads"], decoder["head_size"]) == (2, 4, 4)
    assert decoder["num_key_value_heads"] == (2 if name == "gqa" else 4)
    assert decoder["inputs"]["input_ids"] == "tokens" and decoder["outputs"]["logits"] == "logits"
    assert config["search"]["past_present_share_buffer"] is False
    assert decoder["session_options"]["intra_op_num_threads"] == 1  # a small model: one thread, as archc infer
    transformers = pytest.importorskip("transformers")
    auto = transformers.AutoTokenizer.from_pretrained(str(folder))  # tokenizer.json + tokenizer_config.json
    assert auto(PROMPTS[0])["input_ids"] == list(PROMPTS[0].encode("utf-8")) and auto.eos_token_id == 0
    assert auto.model_max_length == CONTEXT


def test_genai_greedy_tokens_equal_archc_infer(built: tuple[str, Path]) -> None:
    _, folder = built
    new = 16
    got = genai(folder, new, *PROMPTS)
    for prompt, g in zip(PROMPTS, got):
        assert g["ids"] == list(prompt.encode("utf-8"))  # GenAI's tokenizer reads the byte tokenizer.json alike
        ours = archc_tokens(folder / "model.onnx", prompt, new)
        assert g["tokens"] == until_eos(ours, 0), prompt
        assert len(g["tokens"]) == new or g["tokens"][-1] == 0
    assert len({tuple(g["tokens"]) for g in got}) == len(PROMPTS)  # each prompt leads elsewhere: a real comparison
    assert len({t for g in got for t in g["tokens"]}) > 8


def test_generation_up_to_the_context(built: tuple[str, Path]) -> None:
    """GenAI's max_length is the context archc's window holds: the last position is the same token either way."""
    _, folder = built
    prompt = "ab"
    got = genai(folder, CONTEXT - len(prompt), prompt)[0]["tokens"]
    assert got == until_eos(archc_tokens(folder / "model.onnx", prompt, CONTEXT - len(prompt)), 0)


def test_a_users_file_is_kept_and_archcs_own_are_replaced(tmp_path: Path) -> None:
    raw = VARIANTS["gqa"]
    build(tmp_path, raw)
    first = (tmp_path / CONFIG).read_text()
    c = build(tmp_path, spec({"op": "dropout", "p": 0.0}, {"rope": True, "num_kv_heads": 1}))  # archc's: replaced
    assert json.loads((tmp_path / CONFIG).read_text())["model"]["decoder"]["num_key_value_heads"] == 1
    assert (tmp_path / CONFIG).read_text() != first and "wrote the ONNX Runtime GenAI" in describe_package(
        c.report.kvcache)
    (tmp_path / TOKENIZER_CONFIG).write_text('{"mine": true}')  # edited since: the user's now
    c = build(tmp_path, raw)
    assert (tmp_path / TOKENIZER_CONFIG).read_text() == '{"mine": true}'
    line = describe_package(c.report.kvcache)
    assert line.startswith("note: no ONNX Runtime GenAI package") and TOKENIZER_CONFIG in line, line
    assert not (tmp_path / CONFIG).exists() and not (tmp_path / TOKENIZER).exists()  # archc's stale ones: removed


def test_mixed_head_counts_write_no_package(tmp_path: Path) -> None:
    raw = spec({"op": "dropout", "p": 0.0}, {"rope": True})
    raw["layers"][9]["num_kv_heads"] = 1  # the second block's attention: GenAI takes one kv-head count
    c = build(tmp_path, raw)
    assert isinstance(c.report.kvcache, CacheReport) and (tmp_path / "model.kv.onnx").is_file()
    line = describe_package(c.report.kvcache)
    assert "one key/value head count" in line and "[4, 1]" in line, line
    assert not any((tmp_path / f).exists() for f in (CONFIG, TOKENIZER, TOKENIZER_CONFIG))


def test_train_and_export_write_the_package(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"def f{j}(x):\n    return x * {j % 7}\n" for j in range(60)))
    raw = VARIANTS["learned"] | {"train": {"epochs": 1, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 3e-3}},
                                 "data": {"source": f"text:{corpus}", "val_fraction": 0.2, "test_fraction": 0.2}}
    (tmp_path / "lm.json").write_text(json.dumps(raw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = CliRunner().invoke(main, ["train", str(tmp_path / "lm.json"), "--out", str(tmp_path / "run"), "--quiet"],
                               catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    assert all((tmp_path / "run" / f).is_file() for f in (CONFIG, TOKENIZER, TOKENIZER_CONFIG))
    out = tmp_path / "shipped" / "last.onnx"
    out.parent.mkdir()
    r = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--checkpoint", "last", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "wrote the ONNX Runtime GenAI package" in r.output
    assert json.loads((out.parent / CONFIG).read_text())["model"]["decoder"]["filename"] == "last.kv.onnx"
    got = genai(out.parent, 12, "def f")[0]["tokens"]
    assert got == until_eos(archc_tokens(out, "def f", 12), 0)


def test_build_prints_the_package_line(tmp_path: Path) -> None:
    (tmp_path / "lm.json").write_text(json.dumps(VARIANTS["rope"]))
    r = CliRunner().invoke(main, ["build", str(tmp_path / "lm.json"), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert f"wrote the ONNX Runtime GenAI package in {tmp_path}" in r.output
    assert json.loads((tmp_path / CONFIG).read_text())["model"]["decoder"]["filename"] == "m.kv.onnx"
    assert sys.modules.get("onnxruntime_genai") is None  # never in archc's own environment


def test_a_models_own_tokenizer_is_the_packages(tmp_path: Path) -> None:
    """A model trained with a tokenizer.json (archc.tokenizer kind "tokenizers", the file beside it): the package
    keeps that file, its <|endoftext|> is the eos id, and GenAI's prompt ids and greedy tokens are the `tokenizers`
    library's ids, and the torch module's and `archc infer --prompt`'s greedy continuation."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([f"def f{j}(x):\n    return x * {j}\n" for j in range(50)], trainer=trainer)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    text = tok.to_str()
    (tmp_path / TOKENIZER).write_text(text)
    raw = json.loads(json.dumps(VARIANTS["gqa"]))
    raw["inputs"]["tokens"]["vocab"] = vocab
    raw["layers"][0]["num_embeddings"] = raw["layers"][-1]["out_features"] = vocab
    c = run(compiled_from(raw, options=BuildOptions(seed=1, output=tmp_path / "model.onnx", metadata={
        "tokenizer": {"kind": "tokenizers", "file": TOKENIZER, "vocab_size": vocab, "context": CONTEXT}})),
            BUILD_PASSES, "lower")
    with torch.no_grad():
        for p in c.module.parameters():
            if p.ndim >= 2:
                p.mul_(3.0)
    run(c, BUILD_PASSES)
    assert "with the model's tokenizer.json" in describe_package(c.report.kvcache)
    assert (tmp_path / TOKENIZER).read_text() == text  # the model's own file, kept as it is
    config = json.loads((tmp_path / CONFIG).read_text())["model"]
    eos = tok.token_to_id("<|endoftext|>")
    assert config["eos_token_id"] == eos and config["vocab_size"] == vocab
    prompt = "def f3(x):\n    return"
    got = genai(tmp_path, 10, prompt)[0]
    ids = tok.encode(prompt).ids
    assert got["ids"] == ids
    greedy = list(ids)
    with torch.no_grad():
        for _ in range(10):
            greedy.append(int(c.module(torch.tensor([greedy]))[0, -1].argmax()))
    assert got["tokens"] == until_eos(greedy[len(ids):], eos)
    assert got["tokens"] == until_eos(archc_tokens(tmp_path / "model.onnx", prompt, 10), eos)  # through the file


def test_a_run_trained_with_a_tokenizer_is_a_package(tmp_path: Path) -> None:
    """`archc tokenizer train`, `archc train` on text:...?tokenizer=, `archc export`: GenAI runs both folders with
    the run's tokenizer.json, and its greedy tokens are `archc infer --prompt`'s."""
    pytest.importorskip("tokenizers")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"def f{j}(x):\n    return x * {j % 7} + {j}\n" for j in range(200)))
    r = CliRunner().invoke(main, ["tokenizer", "train", f"text:{corpus}", "--vocab-size", "300", "-o",
                                  str(tmp_path / "tok.json")])
    assert r.exit_code == 0, r.output
    base = json.loads(json.dumps(VARIANTS["gqa"]))
    base["inputs"]["tokens"]["vocab"] = 300
    base["layers"][0]["num_embeddings"] = base["layers"][-1]["out_features"] = 300
    raw = base | {"train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 3e-3}},
                   "data": {"source": f"text:{corpus}?tokenizer={tmp_path / 'tok.json'}", "val_fraction": 0.1,
                            "test_fraction": 0.1}}
    (tmp_path / "lm.json").write_text(json.dumps(raw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = CliRunner().invoke(main, ["train", str(tmp_path / "lm.json"), "--out", str(tmp_path / "run"), "--quiet"],
                               catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    out = tmp_path / "shipped" / "model.onnx"
    out.parent.mkdir()
    r = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "with the model's tokenizer.json" in r.output
    for folder in (tmp_path / "run", out.parent):
        assert (folder / TOKENIZER).read_bytes() == (tmp_path / "tok.json").read_bytes()
        eos = json.loads((folder / CONFIG).read_text())["model"]["eos_token_id"]
        got, ours = genai(folder, 12, "def f3")[0], archc_infer(folder / "model.onnx", "def f3", 12)
        assert got["ids"] == ours["prompt_tokens"] and got["tokens"] == until_eos(ours["tokens"], eos)
        assert len(got["tokens"]) > 1 and got["text"] == ours["text"][: len(got["text"])]


def test_a_byte_package_gives_way_to_a_tokenizer_run_export(tmp_path: Path) -> None:
    """archc's own byte tokenizer.json from an earlier export to the same file is replaced by a tokenizer run's;
    a user's tokenizer.json is still refused."""
    pytest.importorskip("tokenizers")
    from archc.train.api import _carried

    build(tmp_path, VARIANTS["learned"])
    byte_file = (tmp_path / TOKENIZER).read_bytes()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / TOKENIZER).write_text("{}")

    class Run:
        root = run_dir

    data = {"tokenizer": {"kind": "tokenizers", "file": TOKENIZER}}
    assert _carried(Run(), data, tmp_path / "model.onnx") == [(run_dir / TOKENIZER, tmp_path / TOKENIZER)]
    assert (tmp_path / TOKENIZER).read_bytes() == byte_file  # checked, not yet copied
    with pytest.raises(Exception, match="expected no other tokenizer.json"):
        _carried(Run(), data, tmp_path / "other.onnx")  # not archc's package of other.onnx: a user's file


def test_the_record_is_read_without_loading_the_weights(built: tuple[str, Path], tmp_path: Path) -> None:
    import onnx

    from archc.export.genai import metadata_entry, recorded

    _, folder = built
    for name in ("model.onnx", "model.kv.onnx"):
        props = onnx.load(str(folder / name), load_external_data=False).metadata_props
        assert props and all(metadata_entry(folder / name, p.key) == p.value for p in props)
    assert set(recorded(folder / "model.kv.onnx")) == {CONFIG, TOKENIZER, TOKENIZER_CONFIG}
    (tmp_path / "bad.kv.onnx").write_bytes(b"\xff" * 40)
    assert recorded(tmp_path / "bad.kv.onnx") == {} and recorded(tmp_path / "none.kv.onnx") == {}
