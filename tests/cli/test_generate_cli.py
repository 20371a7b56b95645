"""`archc infer MODEL --prompt TEXT`: text generation with ONNX Runtime from a language model trained by archc."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.cli import main

CONTEXT = 12


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny byte-level GPT trained for one epoch on a few small files: its model.onnx."""
    import torch

    root = tmp_path_factory.mktemp("lm")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"m{i}.py").write_text("".join(f"def f{j}(x):\n    return x * {i}\n" for j in range(12)))
    spec = {
        "archc": 1, "model": {"name": "tiny-lm"},
        "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}},
        "axes": {"seq": CONTEXT}, "task": {"kind": "language_model"},
        "layers": [
            {"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 16},
            {"id": "pos", "op": "pos_embedding", "max_len": CONTEXT + 4},
            {"id": "attn", "op": "attention", "num_heads": 2, "causal": True},
            {"id": "norm", "op": "rmsnorm"},
            {"id": "logits", "op": "tied_linear", "tie": "emb"},
        ],
        "train": {"epochs": 1, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 3e-3}},
        "data": {"source": "text:corpus", "val_fraction": 0.25, "test_fraction": 0.25},
    }
    (root / "lm.json").write_text(json.dumps(spec))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = CliRunner().invoke(main, ["train", str(root / "lm.json"), "--out", str(root / "run"), "--quiet"],
                               catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    return root / "run" / "model.onnx"


def infer(*args: object):
    return CliRunner().invoke(main, ["infer", *(str(a) for a in args)])


def test_prompt_generates_text_and_reports_speed(lm: Path):
    r = infer(lm, "--prompt", "def ", "--max-new-tokens", 20, "--seed", 1)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("def ")
    assert len(r.stdout.encode()) >= len("def ") + 1
    # the trained run folder holds model.kv.onnx, so the KV cache runs (before it, the line said "no KV cache")
    assert "20 new token(s)" in r.stderr and "tokens/s" in r.stderr and "KV cache" in r.stderr
    assert "no KV cache" not in r.stderr


def test_training_writes_the_cache_and_greedy_output_is_byte_identical_without_it(lm: Path):
    assert lm.with_name("model.kv.onnx").is_file()
    runs = {flag: infer(lm, "--prompt", "def f", "--max-new-tokens", 3 * CONTEXT, "--temperature", 0, *flag)
            for flag in ((), ("--no-cache",))}
    cached, plain = runs[()], runs[("--no-cache",)]
    assert cached.exit_code == plain.exit_code == 0, cached.output + plain.output
    assert cached.stdout == plain.stdout
    assert "tokens/s, KV cache)" in cached.stderr
    assert "no KV cache (--no-cache)" in plain.stderr
    tokens = [json.loads(infer(lm, "--prompt", "def f", "--max-new-tokens", 3 * CONTEXT, "--temperature", 0,
                               "--json", *flag).stdout) for flag in ((), ("--no-cache",))]
    assert tokens[0]["tokens"] == tokens[1]["tokens"] and len(tokens[0]["tokens"]) == 3 * CONTEXT
    assert tokens[0]["kv_cache"] is True and tokens[1]["kv_cache"] is False


def test_export_rewrites_the_cache(lm: Path, tmp_path: Path):
    out = tmp_path / "last.onnx"
    r = CliRunner().invoke(main, ["export", str(lm.parent), "--checkpoint", "last", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert f"wrote {tmp_path / 'last.kv.onnx'}" in r.output and "match the full recompute" in r.output
    assert infer(out, "--prompt", "de", "--max-new-tokens", 4, "--json").exit_code == 0


def test_seed_makes_sampling_reproducible(lm: Path):
    args = ("--prompt", "return", "--max-new-tokens", 40, "--temperature", 1.5, "--json")
    a, b, c = (json.loads(infer(lm, *args, "--seed", s).stdout) for s in (7, 7, 8))
    assert a["tokens"] == b["tokens"] and a["text"] == b["text"] and a["new_tokens"] == 40
    assert a["tokens"] != c["tokens"]
    assert a["tokens_per_second"] > 0 and a["prompt"] == "return"


def test_greedy_ignores_the_seed_and_top_k_one_is_greedy(lm: Path):
    greedy = [json.loads(infer(lm, "--prompt", "def f", "--max-new-tokens", 15, "--temperature", 0, "--seed", s,
                               "--json").stdout)["tokens"] for s in (0, 1)]
    top1 = json.loads(infer(lm, "--prompt", "def f", "--max-new-tokens", 15, "--top-k", 1, "--seed", 5,
                            "--json").stdout)["tokens"]
    assert greedy[0] == greedy[1] == top1


@pytest.mark.parametrize("args, message", [
    ((), "exactly one of --input"),
    (("--prompt", "x", "--input", "sklearn:digits"), "exactly one of --input"),
    (("--prompt", "x", "--output", "out.json"), "--output is for --input"),
    (("--prompt", "x", "--top-k", 0), "top-k"),
    (("--prompt", "x", "--max-new-tokens", -5), "max-new-tokens"),
])
def test_usage_errors_exit_2(lm: Path, args: tuple, message: str):
    r = infer(lm, *args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr


def test_a_float_option_out_of_range_names_it(lm: Path):
    r = infer(lm, "--prompt", "x", "--temperature", -1)  # archc.clihelp.Number: one line, exit 1
    assert (r.exit_code, r.stderr) == (1, "error: --temperature: expected a number >= 0, received -1\n"), r.output


def test_prompt_on_a_classifier_is_a_user_error(tmp_path: Path):
    spec = {"archc": 1, "model": {"name": "clf"}, "inputs": {"x": {"shape": [4]}},
            "layers": [{"op": "linear", "out_features": 3}]}
    (tmp_path / "clf.json").write_text(json.dumps(spec))
    built = CliRunner().invoke(main, ["build", str(tmp_path / "clf.json"), "-o", str(tmp_path / "clf.onnx")])
    assert built.exit_code == 0, built.output
    r = infer(tmp_path / "clf.onnx", "--prompt", "hello")
    assert r.exit_code == 1
    assert "expected a language model" in r.stderr and "Traceback" not in r.output


def test_prompts_file_is_batched_and_each_prompt_gets_its_own_tokens(lm: Path, tmp_path: Path):
    prompts = ["def f", "return", "x", "def f0(x):\n"]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    how = ("--max-new-tokens", 9, "--temperature", 0.8, "--top-p", 0.9, "--repetition-penalty", 1.2, "--seed", 3)
    r = infer(lm, "--prompts", tmp_path / "p.jsonl", *how, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    alone = [json.loads(infer(lm, "--prompt", p, *how, "--json").stdout) for p in prompts]
    assert [x["prompt"] for x in out["prompts"]] == prompts
    assert [x["tokens"] for x in out["prompts"]] == [a["tokens"] for a in alone]
    assert [x["text"] for x in out["prompts"]] == [a["text"] for a in alone]
    assert out["new_tokens"] == 4 * 9 and out["tokens_per_second"] > 0 and out["kv_cache"] is True
    first = out["prompts"][0]
    assert first["finish"] == "length" and first["stop"] is None and 0 < first["prompt_seconds"] <= first["seconds"]
    (tmp_path / "p.txt").write_text("def f\nreturn\n")
    text = infer(lm, "--prompts", tmp_path / "p.txt", "--max-new-tokens", 5, "--temperature", 0)
    assert text.exit_code == 0, text.output
    assert text.stdout == "\n\n".join(p + a for p, a in zip(["def f", "return"], [
        json.loads(infer(lm, "--prompt", p, "--max-new-tokens", 5, "--temperature", 0, "--json").stdout)["text"]
        for p in ("def f", "return")])) + "\n"
    assert "2 prompts, 10 new token(s)" in text.stderr


def test_stop_strings_cut_the_text(lm: Path):
    full = json.loads(infer(lm, "--prompt", "def f", "--max-new-tokens", 30, "--temperature", 0, "--json").stdout)
    stop = full["text"][3:5]
    r = json.loads(infer(lm, "--prompt", "def f", "--max-new-tokens", 30, "--temperature", 0, "--stop", stop,
                         "--stop", "never there", "--json").stdout)
    at = full["text"].find(stop)
    assert r["text"] == full["text"][:at] and r["finish"] == "stop" and r["stop"] == stop
    assert r["tokens"] == full["tokens"][:len(r["tokens"])] and len(r["tokens"]) < 30


def test_a_terminal_gets_the_text_as_it_is_made(lm: Path, monkeypatch: pytest.MonkeyPatch):
    import archc.cli

    plain = infer(lm, "--prompt", "def f", "--max-new-tokens", 12, "--temperature", 0)
    writes: list[str] = []
    monkeypatch.setattr(archc.cli, "_terminal", lambda: True)
    from archc.runtime.generate import TextStream

    original = TextStream._emit

    def spy(self, text):  # noqa: ANN001, ANN202
        before = self.written
        original(self, text)
        if self.written != before:
            writes.append(self.written[len(before):])

    monkeypatch.setattr(TextStream, "_emit", spy)
    streamed = infer(lm, "--prompt", "def f", "--max-new-tokens", 12, "--temperature", 0)
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == plain.stdout
    assert len(writes) > 1 and "def f" + "".join(writes) + "\n" == plain.stdout


@pytest.mark.parametrize("args, message", [
    (("--prompt", "x", "--top-p", 1.5), "--top-p: expected a number in (0, 1]"),
    (("--prompt", "x", "--top-p", 0), "--top-p: expected a number > 0"),
    (("--prompt", "x", "--repetition-penalty", 0), "--repetition-penalty: expected a number > 0"),
    (("--prompt", "x", "--max-time", -1), "--max-time: expected a number > 0"),
    (("--prompt", "x", "--stop", ""), "--stop: expected a non-empty text"),
    (("--prompts", "missing.txt"), "--prompts missing.txt: expected a readable file"),
])
def test_generation_flags_are_checked_up_front(lm: Path, args: tuple, message: str):
    r = infer(lm, *args)
    assert r.exit_code == 1, r.output
    assert message in r.stderr and "Traceback" not in r.output


def test_an_empty_prompts_file_is_a_user_error(lm: Path, tmp_path: Path):
    (tmp_path / "empty.txt").write_text("\n")
    r = infer(lm, "--prompts", tmp_path / "empty.txt")
    assert r.exit_code == 1 and "expected at least one prompt" in r.stderr, r.output
    both = infer(lm, "--prompts", tmp_path / "empty.txt", "--prompt", "x")
    assert both.exit_code == 2 and "exactly one of" in both.stderr


def test_a_real_terminal_gets_the_same_text_as_a_pipe(lm: Path):
    """`archc infer --prompt` in a pseudo-terminal (where the text is written as it is made) prints what it prints
    through a pipe (at the end); that a terminal gets several writes is the test above's."""
    import os
    import pty
    import subprocess
    import sys

    args = [sys.executable, "-m", "archc.cli", "infer", str(lm), "--prompt", "def f", "--max-new-tokens", "40",
            "--temperature", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    piped = subprocess.run(args, capture_output=True, env=env, timeout=120)
    assert piped.returncode == 0, piped.stderr
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(args, stdout=child_fd, stderr=subprocess.DEVNULL, env=env)
    os.close(child_fd)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 1 << 16)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    assert proc.wait(timeout=120) == 0
    assert b"".join(chunks).replace(b"\r\n", b"\n") == piped.stdout
