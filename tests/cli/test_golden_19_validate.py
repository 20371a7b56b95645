"""Golden messages for issue 19's class "validate passes what a later step refuses": the CLI on each bad case, the
exact first line of stderr and exit 1. Paths are written as TMP/... and SPECS/...

Each case passed validate (or the option parser) on the main of 2026-12-04 and failed later, or not at all."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from archc.cli import main

SPECS = Path(__file__).resolve().parents[2] / "specs"
HEAD = 'archc = 1\n[model]\nname = "g"\n[inputs.x]\nshape = [4]\n'

Case = Callable[..., list]
CASES: dict[str, tuple[Case, str]] = {}


def case(expected: str):
    def add(fn: Case) -> Case:
        CASES[fn.__name__] = (fn, expected)
        return fn
    return add


def _toml(path: Path, text: str) -> Path:
    path.write_text(HEAD + text)
    return path


# ---- numbers that are not finite -----------------------------------------------------------------------------------
@case("error: TMP/s.toml: layers[1] (c).min: expected a finite number, received nan")
def clamp_bound_nan(tmp, mp):
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 3\n'
                                                '[[layers]]\nid = "c"\nop = "clamp"\nmin = nan\n')]


@case("error: TMP/s.json: layers[0] (p).value: expected a finite number, received -inf")
def pad_value_json_infinity(tmp, mp):
    (tmp / "s.json").write_text(json.dumps({"archc": 1, "model": {"name": "g"}, "inputs": {"x": {"shape": [4]}},
                                            "layers": [{"id": "p", "op": "pad", "pad": [1, 1],
                                                        "value": float("-inf")}]}))
    return ["build", tmp / "s.json", "-o", tmp / "m.onnx"]


@case("error: TMP/s.toml: layers[0] (p).value: expected a number of magnitude at most 3.403e+38 (float32's "
      "largest), received 1e+39")
def pad_value_past_float32(tmp, mp):
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nid = "p"\nop = "pad"\npad = [1, 1]\nvalue = 1e39\n')]


@case("error: TMP/s.toml: params.v: expected a finite number, received inf")
def parameter_value_inf(tmp, mp):
    return ["validate", _toml(tmp / "s.toml", '[params]\nv = inf\n[[layers]]\nop = "leaky_relu"\n'
                                                'negative_slope = "$v"\n')]


@case("error: TMP/s.toml: train.optimizer.lr: expected a finite number, received nan")
def learning_rate_nan(tmp, mp):
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 2\n'
                                                '[train]\noptimizer = { lr = nan }\n')]


@case("error: TMP/s.toml: inputs.t.columns.a.fill: expected a finite number, received nan")
def column_fill_nan(tmp, mp):
    (tmp / "s.toml").write_text('archc = 1\n[model]\nname = "g"\n[inputs.t]\ncolumns = { a = { type = "numeric", '
                                'missing = "constant", fill = nan }, b = "numeric" }\n'
                                '[[layers]]\nop = "linear"\nout_features = 2\n')
    return ["validate", tmp / "s.toml"]


@case("error: TMP/s.toml: data.split_seed: expected a value >= 0, received -1")
def split_seed_numpy_refuses(tmp, mp):
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 2\n'
                                                '[data]\nsource = "sklearn:iris"\nsplit_seed = -1\n')]


@case("error: --max-drop: expected a finite number, received nan")
def quantize_max_drop_nan(tmp, mp):
    return ["quantize", tmp / "m.onnx", "--max-drop", "nan"]


@case("error: --lr: expected a finite number, received inf")
def train_lr_inf(tmp, mp):
    return ["train", SPECS / "digits_mlp.toml", "--lr", "inf", "--out", tmp / "run"]


@case("error: SPECS/digits_mlp.toml: train.batch_size: expected activations that fit in memory (286.1 MiB), received "
      "3.3 KiB per example x batch 2000000 = 6.3 GiB (reduce the batch size or the layer sizes, or "
      "ARCHC_MEMORY_LIMIT=BYTES overrides this machine's memory)")
def train_that_would_run_out_of_memory(tmp, mp):
    """validate warns about it (exit 0); train refuses before reading data or making the run folder."""
    mp.setenv("ARCHC_MEMORY_LIMIT", "3e8")
    return ["train", SPECS / "digits_mlp.toml", "--batch-size", "2000000", "--out", tmp / "run"]


@case("error: --temperature: expected a finite number, received inf")
def generate_temperature_inf(tmp, mp):
    return ["infer", tmp / "m.onnx", "--prompt", "ab", "--temperature", "inf"]


# ---- language models: what generation feeds and reads ---------------------------------------------------------------
LM = {"archc": 1, "model": {"name": "lm"}, "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": 256}},
      "task": {"kind": "language_model"},
      "layers": [{"id": "emb", "op": "embedding", "num_embeddings": 256, "embedding_dim": 16},
                 {"id": "pos", "op": "pos_embedding", "max_len": 16},
                 {"id": "attn", "op": "attention", "num_heads": 2, "causal": True},
                 {"id": "logits", "op": "tied_linear", "tie": "emb"}]}


@case("error: TMP/s.json: inputs: language_model expects one int64 token input [batch, seq], received tokens "
      "float32 [batch, seq, 4] (e.g. [inputs.tokens] shape = [\"seq\"], dtype = \"int64\", vocab = 256)")
def language_model_of_float_inputs(tmp, mp):
    spec = LM | {"inputs": {"tokens": {"shape": ["seq", 4]}}, "layers": [{"op": "linear", "out_features": 256}]}
    (tmp / "s.json").write_text(json.dumps(spec))
    return ["validate", tmp / "s.json"]


@case("error: TMP/s.json: task.kind: language_model expects the output 'logits' to keep the input's positions "
      "[batch, seq, vocab] (one next-token score per input token), received [batch, seq-1, 256]")
def language_model_that_drops_a_position(tmp, mp):
    layers = [*LM["layers"][:3], {"op": "slice", "dim": 1, "start": 1}, LM["layers"][3]]
    (tmp / "s.json").write_text(json.dumps(LM | {"layers": layers}))
    return ["validate", tmp / "s.json"]


# ---- memory: the export's trace and parity checks ------------------------------------------------------------------
WIDE = {"archc": 1, "model": {"name": "wide"}, "inputs": {"x": {"shape": ["seq", 64]}}, "task": {"kind": "regression"},
        "train": {"batch_size": 1}, "layers": [{"op": "relu"}, {"op": "tanh"}]}


@case("error: TMP/s.json: axes.seq: expected the export's checks to fit in memory (1.0 GiB), received 1.7 GiB for "
      "the export's trace at batch 2, seq 1,000,000 (inputs, activations, weights) (lower [axes] seq: the export "
      "traces at it and checks near it; or ARCHC_MEMORY_LIMIT=BYTES overrides this machine's memory)")
def axis_the_export_cannot_hold(tmp, mp):
    """Training one example at a time fits (244 MiB per tensor); the export's trace at batch 2 would not."""
    mp.setenv("ARCHC_MEMORY_LIMIT", str(2**30))
    (tmp / "s.json").write_text(json.dumps(WIDE | {"axes": {"seq": 1_000_000}}))
    return ["build", tmp / "s.json", "-o", tmp / "m.onnx"]


@case("error: TMP/s.json: inputs.x: expected the export's checks to fit in memory (1.0 GiB), received 1.7 GiB for "
      "the export's trace at batch 2, seq 3,000,001 (inputs, activations, weights) (no [axes] seq: archc chose "
      "3,000,001 inside the bounds the layers put on it; lower those or the layer sizes; or ARCHC_MEMORY_LIMIT=BYTES overrides this machine's memory)")
def typical_size_the_bounds_force(tmp, mp):
    """No [axes] entry: the default size moves inside the slice's bound (seq > 3,000,000)."""
    mp.setenv("ARCHC_MEMORY_LIMIT", str(2**30))
    (tmp / "s.json").write_text(json.dumps(WIDE | {"layers": [{"op": "slice", "dim": 1, "start": 3_000_000},
                                                                {"op": "relu"}]}))
    return ["build", tmp / "s.json", "-o", tmp / "m.onnx"]


@case("error: TMP/s.json: inputs.tokens: language_model on text:corpus.txt expects input 'tokens' to take 256 token "
      "ids (0..255), received vocab = 100 (set vocab = 256 and the embedding's num_embeddings to at least 256)")
def language_model_vocab_below_the_bytes_its_text_holds(tmp, mp):
    layers = [LM["layers"][0] | {"num_embeddings": 100}, *LM["layers"][1:]]
    spec = LM | {"inputs": {"tokens": {"shape": ["seq"], "dtype": "int64"}}, "layers": layers,
                 "data": {"source": "text:corpus.txt"}}
    (tmp / "s.json").write_text(json.dumps(spec))
    return ["validate", tmp / "s.json"]


def test_generation_runs_inside_the_recorded_bound(tmp_path):
    """A position table of 16 rows and no [axes] seq: `--prompt` generates past 16 tokens (the window slides at the
    recorded bound) with and without the KV cache; on the main of 2026-12-04 the 14th token of a 3-byte prompt
    failed (a window of 17)."""
    (tmp_path / "lm.json").write_text(json.dumps(LM))
    r = CliRunner().invoke(main, ["build", str(tmp_path / "lm.json"), "-o", str(tmp_path / "lm.onnx"), "--no-optimize"])
    assert r.exit_code == 0, r.output
    for flags in ((), ("--no-cache",)):
        r = CliRunner().invoke(main, ["infer", str(tmp_path / "lm.onnx"), "--prompt", "abc", "--max-new-tokens", "40",
                                      "--temperature", "0", "--json", *flags])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["new_tokens"] == 40


def _normal(text: str, tmp: Path) -> str:
    return text.replace(str(tmp), "TMP").replace(str(SPECS), "SPECS")


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_line_of_stderr_and_exit_code(name, tmp_path, monkeypatch):
    fn, expected = CASES[name]
    args = [str(a) for a in fn(tmp_path, monkeypatch)]
    r = CliRunner().invoke(main, args)
    first = _normal(r.stderr.splitlines()[0] if r.stderr else "", tmp_path)
    assert (r.exit_code, first) == (1, expected), r.output
