"""Golden messages for issue 19's red team on the spec language and the compiler: the CLI on each bad case, the
exact first line of stderr and exit 1. Paths are written as TMP/...

Each case passed validate (or hung, or crashed) on the main of 2026-12-04 17:30."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from archc.cli import main

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


# ---- expansion that is bounded -------------------------------------------------------------------------------------
@case("error: TMP/s.toml: layers[0]: expected at most 1,000,000 layer instances after expansion (nodes or layers left "
      "out), received more (check `repeat` counts of nested blocks)")
def nested_repeats_of_left_out_layers(tmp, mp):
    """No node is made (every layer is left out), so the node bound never fired: 10,000 ** 3 visits hung."""
    return ["validate", _toml(tmp / "s.toml", '[blocks.a]\nlayers = [{ op = "relu", when = false }]\n'
                                                '[blocks.b]\nlayers = [{ use = "a", repeat = 10000 }]\n'
                                                '[blocks.c]\nlayers = [{ use = "b", repeat = 10000 }]\n'
                                                '[[layers]]\nuse = "c"\nrepeat = 10000\n'
                                                '[[layers]]\nop = "linear"\nout_features = 3\n')]


@case("error: TMP/s.json: blocks.b8.layers[0].use" + "".join(f" in blocks.b{i}.layers[0]" for i in range(9, 40))
      + " in layers[0]: expected blocks nested at most 32 deep, received deeper: b39 -> b38 -> b37 -> ... -> b9 -> "
        "b8 -> b7 (a block may use another; flatten some levels)")
def blocks_nested_past_the_stack(tmp, mp):
    """A chain of 40 blocks each using the one before; 1,000 ran out of Python's stack (exit 3, RecursionError)."""
    blocks = {f"b{i}": {"layers": [{"op": "relu"}] if i == 0 else [{"use": f"b{i - 1}"}]} for i in range(40)}
    (tmp / "s.json").write_text(json.dumps({"archc": 1, "model": {"name": "g"}, "inputs": {"x": {"shape": [4]}},
                                            "blocks": blocks, "layers": [{"use": "b39"}]}))
    return ["validate", tmp / "s.json"]


@case("error: TMP/s.json: layers[39]: slice: expected an axis derived from a symbolic one by at most a few slices "
      "(a name of at most 200 characters), received 'seq[-3:][-3:][-3:][-3:][-3:][-3:][-3:][-…' (203 characters) "
      "(input: slice_38 [batch, seq" + "[-3:]" * 39 + ", 4]) (slice a fixed-size axis, or fewer times in a row)")
def negative_slices_chained(tmp, mp):
    """Each slice's axis name nests the one before ('seq[-3:][-3:]…'), read back recursively: 1,000 of them ran out
    of Python's stack (exit 3); 300 took seconds (each read was linear in the chain, once per limit per candidate)."""
    (tmp / "s.json").write_text(json.dumps({"archc": 1, "model": {"name": "g"}, "inputs": {"x": {"shape": ["seq", 4]}},
                                            "layers": [{"op": "slice", "start": -3}] * 40}))
    return ["validate", tmp / "s.json"]


@case("error: TMP/s.toml: layers[0].act.when: expected true or false, received 'yes' (when = \"${i == 0}\" keeps it "
      "in the first repeat only)")
def activation_when_not_a_boolean(tmp, mp):
    """An act table's `when` was accepted and never read: the activation was applied whatever it said."""
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 3\n'
                                                'act = { op = "relu", when = "yes" }\n')]


# ---- names that collide --------------------------------------------------------------------------------------------
@case("error: TMP/s.toml: blocks.blk.inputs[1]: expected distinct input names, received 'x' again (each input of the "
      "block needs its name)")
def block_inputs_repeated(tmp, mp):
    """inputs = ["x", "x"] from ["x", "y"]: the block read y twice and never x, without a word."""
    return ["validate", _toml(tmp / "s.toml", '[inputs.y]\nshape = [4]\n[blocks.blk]\ninputs = ["x", "x"]\n'
                                                'layers = [{ op = "add", from = ["x", "x"] }]\n[[layers]]\nid = "b"\n'
                                                'use = "blk"\nfrom = ["x", "y"]\n[[layers]]\nop = "concat"\n'
                                                'from = ["b", "x"]\n')]


@case("error: TMP/s.toml: blocks.b.params.repeat: expected a parameter name other than 'repeat', received 'repeat' "
      "('$repeat' in this block is the repeat count: rename the parameter)")
def block_parameter_named_repeat(tmp, mp):
    """The block's `repeat = 3` (and a `with` value for it) was replaced by the use's repeat count without a word."""
    return ["validate", _toml(tmp / "s.toml", '[blocks.b]\nparams = { repeat = 3 }\n'
                                                'layers = [{ op = "linear", out_features = "$repeat" }]\n'
                                                '[[layers]]\nuse = "b"\nrepeat = 2\n')]


@case("error: TMP/s.toml: params.i: expected a parameter name other than 'i', received 'i' ('$i' inside a block is "
      "the repeat index: rename the parameter)")
def global_parameter_named_i_with_blocks(tmp, mp):
    """Inside the block `$i` read the repeat index (0), not the global 7: a linear of 0 features... or of 1."""
    return ["validate", _toml(tmp / "s.toml", '[params]\ni = 7\n[blocks.b]\n'
                                                'layers = [{ op = "linear", out_features = "${i + 1}" }]\n'
                                                '[[layers]]\nuse = "b"\n')]


@case("error: TMP/s.toml: inputs.x.shape[0]: expected a symbolic axis named other than 'batch', received 'batch' "
      "('batch' is every input's implicit first axis (the examples): rename this one)")
def symbolic_axis_named_batch(tmp, mp):
    """[batch, batch, 4]: validate and build passed; `archc infer` refused any input whose axis differed from its
    number of examples ("expected axis 'batch' = 2 (as in input 'x'), received 5")."""
    (tmp / "s.toml").write_text('archc = 1\n[model]\nname = "g"\n[inputs.x]\nshape = ["batch", 4]\n'
                                '[[layers]]\nop = "linear"\nout_features = 3\n[[layers]]\nop = "mean_pool"\n')
    return ["validate", tmp / "s.toml"]


@case("error: TMP/s.toml: axes.sq: expected a symbolic axis of an input or a layer, received 'sq', which none has "
      "(did you mean 'seq'?)")
def axes_entry_misspelt(tmp, mp):
    """[axes] sq = 512 was ignored without a word: seq stayed at its default for the estimates and the trace."""
    (tmp / "s.toml").write_text('archc = 1\n[model]\nname = "g"\n[inputs.x]\nshape = ["seq", 4]\n[axes]\n'
                                'sq = 512\n[[layers]]\nop = "linear"\nout_features = 3\n')
    return ["validate", tmp / "s.toml"]


# ---- [data] and [train] that train refused ----------------------------------------------------------------------
@case("error: TMP/s.toml: data: expected val_fraction + test_fraction < 1, received 0.6 + 0.5 (leave some examples "
      "for training)")
def held_out_fractions_over_one(tmp, mp):
    """Each fraction is in [0, 1), so validate passed; `archc train` refused the sum once it had loaded the data."""
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 3\n[data]\n'
                                                'source = "sklearn:iris"\nval_fraction = 0.6\ntest_fraction = 0.5\n')]


@case("error: TMP/s.toml: train.batch_size: expected a batch size of at least 2 with batchnorm at layers[1] (it "
      "normalizes each channel over the batch), received 1 (raise the batch size, or use layernorm, which normalizes "
      "each example)")
def batchnorm_at_batch_size_one(tmp, mp):
    """`archc train` stopped at its first step with exit 3 (torch: "Expected more than 1 value per channel")."""
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 8\n[[layers]]\n'
                                                'op = "batchnorm"\n[[layers]]\nop = "linear"\nout_features = 3\n'
                                                '[train]\nbatch_size = 1\n')]


def test_batchnorm_trains_on_a_last_batch_of_one():
    """105 training rows at batch 104 leave a last batch of one: it normalizes with the running statistics (and
    leaves them), where torch's BatchNorm raised and `archc train` exited 3 mid-epoch."""
    torch = pytest.importorskip("torch")
    from archc.lower import lower
    from archc.pipeline import compile_spec
    spec = {"archc": 1, "model": {"name": "g"}, "inputs": {"x": {"shape": [4]}},
            "layers": [{"op": "linear", "out_features": 8}, {"op": "batchnorm"}, {"op": "linear", "out_features": 3}]}
    module = lower(compile_spec(spec).graph)
    module.train()
    bn = next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d))
    before = bn.running_mean.clone()
    out = module(torch.randn(1, 4))
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    assert torch.equal(bn.running_mean, before)
    module(torch.randn(5, 4))  # a batch of several updates them as torch does
    assert not torch.equal(bn.running_mean, before)


@case("error: TMP/s.toml: inputs: training needs a single-input spec for now, received 2 inputs (x, y) (task kinds "
      "diffusion, node_classification, graph_classification feed several inputs)")
def two_inputs_with_data_for_a_one_input_kind(tmp, mp):
    """A classification spec with [data] and two inputs validated; `archc train` refused it."""
    return ["validate", _toml(tmp / "s.toml", '[inputs.y]\nshape = [4]\n[[layers]]\nop = "add"\n'
                                                'from = ["x", "y"]\n[[layers]]\nop = "linear"\nout_features = 3\n'
                                                '[data]\nsource = "sklearn:iris"\n')]


LM = ('archc = 1\n[model]\nname = "g"\n[inputs.tokens]\nshape = ["seq"]\ndtype = "int64"\nvocab = 256\n'
      '[task]\nkind = "language_model"\n[[layers]]\nop = "embedding"\nnum_embeddings = 256\nembedding_dim = 8\n'
      '[[layers]]\nid = "pos"\nop = "pos_embedding"\nmax_len = 16\n[[layers]]\nop = "linear"\nout_features = 256\n'
      '[train]\nepochs = 1\n[data]\nsource = "text:notes.txt?context=40"\n')


@case("error: data text:notes.txt?context=40: expected examples whose axis 'seq' (the spec's input 'tokens') is "
      "1..16 (layers[1] (pos): max_len = 16, the position table's rows), received 40 (give the data windows of at "
      "most 16)")
def text_windows_longer_than_the_position_table(tmp, mp):
    """Windows of 40 tokens into a table of 16 positions: `archc train` exited 3 in its first step (torch: "The size
    of tensor a (40) must match the size of tensor b (16)")."""
    (tmp / "notes.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    (tmp / "s.toml").write_text(LM)
    return ["train", tmp / "s.toml", "--out", tmp / "run"]


@case("error: TMP/s.toml: train.optimizer.nesterov: expected momentum > 0 with nesterov = true, received momentum 0")
def nesterov_without_momentum(tmp, mp):
    """Validate passed; `archc train` refused it when it built the optimizer."""
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 3\n[train]\n'
                                                'optimizer = { name = "sgd", nesterov = true }\n')]


@case("error: TMP/s.toml: train.optimizer.momentum: expected no momentum for optimizer 'adamw' (it has none), "
      "received 0.9 (momentum and nesterov are sgd's; betas are adam's and adamw's)")
def momentum_for_adamw(tmp, mp):
    """AdamW has no momentum: the setting was dropped without a word."""
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 3\n[train]\n'
                                                'optimizer = { momentum = 0.9 }\n')]


@case("error: TMP/s.toml: train.schedule.gamma: expected no gamma for schedule 'cosine', received 0.5 (step_size "
      "and gamma are the 'step' schedule's)")
def step_settings_for_cosine(tmp, mp):
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 3\n[train]\n'
                                                'schedule = { name = "cosine", gamma = 0.5 }\n')]


@case('error: TMP/s.toml: train.early_stopping: expected no early_stopping with monitor = "last" (it never stops '
      'early), received 3 (monitor "metric" or "loss" to stop early)')
def early_stopping_with_monitor_last(tmp, mp):
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 3\n[train]\n'
                                                'early_stopping = 3\nmonitor = "last"\n')]


@case("error: TMP/s.toml: train.label_smoothing: expected label_smoothing = 0 for regression (only classification, "
      "language_model, node_classification, graph_classification, multilabel smooth their labels), received 0.2")
def label_smoothing_for_regression(tmp, mp):
    """Regression's loss never reads it: the setting was dropped without a word."""
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 1\n[task]\n'
                                                'kind = "regression"\n[train]\nlabel_smoothing = 0.2\n')]


@case("error: TMP/s.toml: train.diffusion: expected no [train] diffusion for classification (only diffusion reads "
      "it), received one (set [task] kind, or remove it)")
def diffusion_recipe_for_classification(tmp, mp):
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 3\n[train]\n'
                                                'diffusion = { steps = 10 }\n')]


@case("error: TMP/s.toml: task.labels: expected no labels for regression (the output 'linear_0' holds values, not "
      "scores), received 1")
def labels_for_regression(tmp, mp):
    """Nothing read them: `archc infer` showed the output's own name over the values."""
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 1\n[task]\n'
                                                'kind = "regression"\nlabels = ["price"]\n')]


@case("error: TMP/s.toml: data.normalize: expected normalize = false for the int64 input 'tokens' (it standardizes "
      "float features), received true (token or class ids are not normalized)")
def normalize_token_ids(tmp, mp):
    """Validate passed; `archc train` refused it after loading the data, naming nothing ("error: expected float
    features to normalize, received int64 (token ids?)")."""
    (tmp / "s.toml").write_text(LM.replace('[data]\n', '[data]\nnormalize = true\n'))
    return ["validate", tmp / "s.toml"]


@case("error: TMP/s.toml: data.source: expected one of digits, iris, wine, breast_cancer, diabetes, received 'irsi' "
      "(did you mean iris?)")
def data_source_misspelt(tmp, mp):
    """Validate passed any [data] source; `archc train` refused it (scheme, name, options, task) when it loaded it."""
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 3\n[data]\n'
                                                'source = "sklearn:irsi"\n')]


@case("error: TMP/s.toml: data.source: expected no options (sklearn: sources take none), received target='species' "
      "(unknown option 'target') (target is an option of csv: and parquet: sources)")
def data_target_for_a_source_without_columns(tmp, mp):
    return ["validate", _toml(tmp / "s.toml", '[[layers]]\nop = "linear"\nout_features = 3\n[data]\n'
                                                'source = "sklearn:iris"\ntarget = "species"\n')]


# ---- memory estimates that cover what the build holds ---------------------------------------------------------------
@case("error: TMP/s.toml: axes.seq: expected the export's checks to fit in memory (1.9 GiB), received 2.5 GiB for the "
      "export's parity check at batch 3, seq 2,051 (inputs, activations, weights, outputs compared) (lower [axes] seq: "
      "the export traces at it and checks near it; or ARCHC_MEMORY_LIMIT=BYTES overrides this machine's memory)")
def attention_scores_past_the_memory_limit(tmp, mp):
    """The estimate counted node outputs only (0.3 GiB here); `archc build` peaked at 2.5 GB, most of it attention's
    (batch, heads, seq, seq) scores in ONNX Runtime's parity check."""
    mp.setenv("ARCHC_MEMORY_LIMIT", "2e9")
    (tmp / "s.toml").write_text('archc = 1\n[model]\nname = "g"\n[inputs.x]\nshape = ["seq", 64]\n[axes]\n'
                                'seq = 2048\n[[layers]]\nop = "attention"\nnum_heads = 16\n')
    return ["build", tmp / "s.toml", "-o", tmp / "m.onnx"]  # validate warns (exit 0); build refuses


def _normal(text: str, tmp: Path) -> str:
    return text.replace(str(tmp), "TMP")


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_line_of_stderr_and_exit_code(name, tmp_path, monkeypatch):
    fn, expected = CASES[name]
    args = [str(a) for a in fn(tmp_path, monkeypatch)]
    r = CliRunner().invoke(main, args)
    first = _normal(r.stderr.splitlines()[0] if r.stderr else "", tmp_path)
    assert (r.exit_code, first) == (1, expected), r.output


def test_a_thousand_nested_blocks_is_a_user_error(tmp_path):
    """1,000 blocks each using the one before: exit 3 (RecursionError) on the main of 2026-12-04, exit 1 now."""
    blocks = {f"b{i}": {"layers": [{"op": "relu"}] if i == 0 else [{"use": f"b{i - 1}"}]} for i in range(1000)}
    (tmp_path / "s.json").write_text(json.dumps({"archc": 1, "model": {"name": "g"}, "inputs": {"x": {"shape": [4]}},
                                                 "blocks": blocks, "layers": [{"use": "b999"}]}))
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "s.json")])
    assert r.exit_code == 1 and "expected blocks nested at most 32 deep" in r.stderr, r.output


def test_validate_walks_the_nodes_a_constant_number_of_times_whatever_the_inputs():
    """check_inputs_read listed each input's readers with a walk over the nodes: 8,000 inputs each read by a layer
    took 3.8 s of validate's 4.3 (quadratic: 20,000 of each, half a minute)."""
    from archc.graph.infer import infer
    from archc.graph.ir import Graph
    from archc.pipeline import compile_spec

    class CountingList(list):
        walks = 0

        def __iter__(self):
            CountingList.walks += 1
            return super().__iter__()

    def walks(n: int) -> int:
        spec = {"archc": 1, "model": {"name": "g"}, "inputs": {f"x{i}": {"shape": [2]} for i in range(n)},
                "layers": [{"op": "relu", "id": f"r{i}", "from": f"x{i}"} for i in range(n)]
                + [{"op": "concat", "from": [f"r{i}" for i in range(n)], "dim": 1}]}
        c = compile_spec(spec, stop_after="expand")
        g = c.graph
        CountingList.walks = 0
        infer(Graph(g.name, g.inputs, CountingList(g.nodes), g.outputs, g.sizes, g.vocab), c.spec)
        return CountingList.walks

    assert walks(3) == walks(30)


def test_three_thousand_chained_slices_validate_in_linear_time():
    """x[:, 1:] 3,000 times: the axis is 'seq-3000' (it was 'seq-1-1-…-1', read back recursively: exit 3 on the main
    of 2026-12-04, and 300 slices took 5 s), and each candidate size is checked against one range, not every slice
    (17 s of a profile at 3,000)."""
    from archc.pipeline import compile_spec
    spec = {"archc": 1, "model": {"name": "g"}, "inputs": {"x": {"shape": ["seq", 4]}}, "axes": {"seq": 5000},
            "layers": [{"op": "slice", "start": 1}] * 3000}
    graph = compile_spec(spec).graph
    assert graph.nodes[-1].out.shape == ("batch", "seq-3000", 4)


def test_an_activation_when_false_is_left_out():
    """`act = { op = "relu", when = "${i == 0}" }` in a block: the first repeat has the relu, the second not (on the
    main of 2026-12-04 both had it: `when` in an act table was read by no one)."""
    from archc.pipeline import compile_spec
    spec = {"archc": 1, "model": {"name": "g"}, "inputs": {"x": {"shape": [4]}},
            "blocks": {"b": {"layers": [{"id": "fc", "op": "linear", "out_features": 4,
                                         "act": {"op": "relu", "when": "${i == 0}"}}]}},
            "layers": [{"id": "s", "use": "b", "repeat": 2}]}
    acts = {n.id: n.act for n in compile_spec(spec).graph.nodes}
    assert acts["s.0.fc"] is not None and acts["s.0.fc"].name() == "relu" and acts["s.1.fc"] is None
