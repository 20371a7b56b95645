"""[train] freeze: the named parameters keep their values and stay out of the optimizer; validate checks every freeze
pattern and [train.lora] target names something (with the place, what it expected, what it received, and a close
name), and that something is left to train."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import archc.train as train
from archc.cli import main
from archc.graph.select import Selector
from archc.lower import lower
from archc.pipeline import compile_spec

ROOT = Path(__file__).resolve().parents[2]


def decoder(**train_keys) -> dict:
    """The zoo's SmolLM spec at a tiny size (validate only: no data is read)."""
    raw = tomllib.loads((ROOT / "specs" / "zoo" / "smollm_135m.toml").read_text())
    raw["params"] |= {"vocab": 256, "dim": 32, "heads": 4, "kv_heads": 2, "layers": 3, "ffn": 64}
    raw["inputs"]["tokens"]["vocab"] = 256
    raw["train"] = train_keys
    return raw


def errors(spec: dict, tmp_path: Path) -> list[str]:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    r = CliRunner().invoke(main, ["validate", str(path)])
    found = [line.split("spec.json: ", 1)[1] for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.exit_code == (1 if found else 0), r.output
    return found


def test_patterns_that_name_parameters_validate(tmp_path):
    ok = decoder(freeze=["embed_tokens", "layers.{i}.self_attn", "layers.*.mlp.*_proj.weight", "layers.0", "norm"],
                 lora={"rank": 4, "targets": ["layers.{i}.self_attn.q_proj", "layers.{n}.mlp"]})
    assert errors(ok, tmp_path) == []


def test_a_pattern_that_names_nothing_is_located_with_a_close_name(tmp_path):
    found = errors(decoder(freeze=["embed_tokens", "layers.{i}.self_atn", "layers.7"]), tmp_path)
    assert len(found) == 2, found
    assert found[0].startswith("train.freeze[1]: expected parameters of the model, received 'layers.{i}.self_atn', "
                               "which names none (did you mean 'layers.{i}.self_attn' or "), found
    assert found[1].startswith("train.freeze[2]: expected parameters of the model, received 'layers.7', which names "
                               "none ("), found


def test_lora_targets_must_be_linear_layers(tmp_path):
    bad = decoder(lora={"targets": ["layers.{i}.input_layernorm", "embed_tokens", "layers.{i}.mpl"]})
    found = errors(bad, tmp_path)
    assert found[0].startswith("train.lora.targets[0]: expected linear layers (linear, attention's or gated_mlp's "
                               "projections), received 'layers.{i}.input_layernorm', which names only "
                               "'layers.0.input_layernorm.weight' and 2 more like it (here: "
                               "layers.{i}.self_attn.q_proj"), found[0]
    assert found[1].startswith("train.lora.targets[1]: expected linear layers"), found
    assert "'embed_tokens', which names only 'embed_tokens.weight'" in found[1]
    assert "received 'layers.{i}.mpl', which names none (did you mean 'layers.{i}.mlp' or" in found[2], found


def test_freezing_everything_without_adapters_is_refused(tmp_path):
    assert errors(decoder(freeze=["layers", "embed_tokens", "norm"]), tmp_path) == [
        "train.freeze: expected some parameters left to train, received patterns that freeze all 29 (leave a "
        "layer out of freeze, or add [train.lora] adapters)"]
    assert errors(decoder(freeze=["layers", "embed_tokens", "norm"], lora={"targets": ["layers"]}), tmp_path) == []


@pytest.mark.parametrize("text", ["layers.{i", "layers.{}.mlp", ".norm", "norm.", "layers..mlp"])
def test_a_malformed_pattern_is_a_spec_error(text, tmp_path):
    found = errors(decoder(freeze=[text]), tmp_path)
    assert found == [f"train.freeze[0]: expected a node id or a pattern such as 'layers.{{i}}.attn' ({{name}} for an "
                     f"index, * within a name), received {text!r}"]


def test_a_pattern_names_whole_dotted_parts():
    sel = Selector.parse("layers.{i}.mlp", "x")
    assert sel.matches("layers.12.mlp.up_proj.weight") and sel.matches("layers.0.mlp")
    assert not sel.matches("layers.01.mlp") and not sel.matches("layers.1.mlpx.weight")
    assert not sel.matches("xlayers.1.mlp")
    assert Selector.parse("layers.*.mlp.*_proj", "x").matches("layers.3.mlp.gate_proj.bias")
    assert not Selector.parse("layers.*", "x").matches("layers")


def test_frozen_parameters_keep_their_values_and_stay_out_of_the_optimizer(h, tmp_path):
    data = h.make_npz(tmp_path / "d.npz", n=200)
    spec = h.make_spec(tmp_path / "s.json", data, train={"epochs": 2, "freeze": ["fc1.weight"]})
    train.run(spec, out=tmp_path / "run", quiet=True, device="cpu", optimize=False)
    compiled = compile_spec(json.loads(spec.read_text()))
    start = lower(compiled.graph, seed=0).state_dict()
    end = load_file(tmp_path / "run" / "checkpoint.safetensors")
    assert torch.equal(end["fc1.weight"], start["fc1.weight"])
    for name in ("fc1.bias", "out.weight", "out.bias"):
        assert not torch.equal(end[name], start[name]), name
    state = load_file(tmp_path / "run" / "train_state.safetensors")
    assert {k.split(".")[1] for k in state if k.startswith("optim.")} == {"0", "1", "2"}  # three tensors train


def test_an_adapter_on_a_weight_another_node_ties_to_is_refused(tmp_path):
    spec = {"archc": 1, "model": {"name": "tied"}, "inputs": {"x": {"shape": [8]}},
            "layers": [{"id": "fc", "op": "linear", "out_features": 8, "act": "relu"},
                       {"id": "head", "op": "tied_linear", "tie": "fc"}],
            "train": {"lora": {"targets": ["fc"]}}}
    assert errors(spec, tmp_path) == [
        "train.lora.targets: expected linear layers whose weight no other node reuses, received 'fc', whose weight "
        "'head' also uses (tie = \"fc\"): the merged adapter would change 'head' too (leave it out of the targets)"]
