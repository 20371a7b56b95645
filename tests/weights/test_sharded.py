"""Sharded safetensors as transformers writes them (`save_pretrained(max_shard_size=...)`: shards and
model.safetensors.index.json): `--weights` takes the index or its folder, every shard's header is checked before
anything is allocated, and an index that disagrees with its shards is one clear error. The checkpoint is a small
random Mistral (MistralForCausalLM), loaded into specs/zoo/mistral_7b.toml at its size through
specs/zoo/mistral.weights.toml, so the zoo's Mistral mapping is proven here too."""
from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.errors import ModelError
from archc.weights import Checkpoint

transformers = pytest.importorskip("transformers")
import torch  # noqa: E402

ZOO = Path(__file__).resolve().parents[2] / "specs" / "zoo"
SIZE = {"vocab": 256, "dim": 64, "heads": 4, "kv_heads": 2, "layers": 2, "ffn": 96}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random MistralForCausalLM (untied head) saved in shards of at most 100 KB, and its logits on fixed tokens."""
    folder = tmp_path_factory.mktemp("mistral")
    config = transformers.MistralConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                        rope_theta=10000.0, max_position_embeddings=64, tie_word_embeddings=False,
                                        sliding_window=None)
    torch.manual_seed(0)
    hf = transformers.MistralForCausalLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():  # off their init: a misplaced tensor cannot hide behind a default
            p.add_(torch.randn(p.shape) * 0.05)
    hf.save_pretrained(folder, max_shard_size="100KB")
    tokens = np.random.default_rng(0).integers(0, 256, (2, 12))
    with torch.no_grad():
        logits = hf(torch.from_numpy(tokens)).logits.numpy()
    return folder, tokens, logits


def spec(tmp: Path) -> Path:
    raw = tomllib.loads((ZOO / "mistral_7b.toml").read_text())
    raw["params"].update(SIZE)
    raw["inputs"]["tokens"]["vocab"] = 256
    raw["axes"]["seq"] = 12
    (tmp / "mistral-small.json").write_text(json.dumps(raw))
    return tmp / "mistral-small.json"


def copy_of(folder: Path, tmp: Path) -> Path:
    out = tmp / "copy"
    shutil.copytree(folder, out)
    return out


def test_transformers_saves_several_shards_and_an_index(saved):
    folder, _, _ = saved
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 3 and all((folder / s).is_file() for s in shards)
    checkpoint = Checkpoint.open(folder)
    assert set(checkpoint.infos) == set(index["weight_map"]) and set(checkpoint.files.values()) == \
        {folder / s for s in shards}


@pytest.mark.parametrize("given", ["index", "folder"])
def test_a_sharded_mistral_loads_through_the_zoo_mapping_and_matches_transformers(saved, tmp_path, given):
    import onnxruntime as ort

    folder, tokens, want = saved
    weights = folder / "model.safetensors.index.json" if given == "index" else folder
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["build", str(spec(tmp_path)), "--weights", str(weights), "--map",
                                  str(ZOO / "mistral.weights.toml"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "loaded 21 tensors" in r.output, r.output  # embed, 9 per layer, norm, the untied head
    (logits,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"tokens": tokens})
    assert logits.shape == want.shape == (2, 12, 256)
    assert np.abs(logits - want).max() <= 1e-4


def _index(folder: Path) -> tuple[Path, dict]:
    path = folder / "model.safetensors.index.json"
    return path, json.loads(path.read_text())


def test_a_missing_shard_is_named_before_anything_loads(saved, tmp_path):
    folder = copy_of(saved[0], tmp_path)
    path, index = _index(folder)
    gone = sorted(set(index["weight_map"].values()))[1]
    (folder / gone).unlink()
    r = CliRunner().invoke(main, ["build", str(spec(tmp_path)), "--weights", str(folder), "--map",
                                  str(ZOO / "mistral.weights.toml"), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert f"expected the shards model.safetensors.index.json names beside it, received 1 missing: {gone} (for " \
        in r.output, r.output
    assert not (tmp_path / "m.onnx").exists()


def test_an_index_that_disagrees_with_its_shards_is_one_error(saved, tmp_path):
    """A tensor placed in a shard that does not hold it, and that shard's own tensor then placed nowhere."""
    folder = copy_of(saved[0], tmp_path)
    path, index = _index(folder)
    shards = sorted(set(index["weight_map"].values()))
    moved = next(t for t, s in index["weight_map"].items() if s == shards[0])
    index["weight_map"][moved] = shards[1]
    path.write_text(json.dumps(index))
    with pytest.raises(ModelError) as e:
        Checkpoint.open(path)
    message = e.value.message
    assert f"1 tensor the index places in {shards[1]} that it does not hold: {moved}" in message
    assert f"1 tensor {shards[0]} holds that the index does not place there: {moved} (placed in {shards[1]})" \
        in message


@pytest.mark.parametrize("shard, says", [
    ("../model-00001-of-00004.safetensors", "named as a .safetensors file beside the index"),
    ("/etc/passwd", "named as a .safetensors file beside the index"),
    (7, "named as a .safetensors file beside the index"),
])
def test_a_shard_not_named_as_a_file_beside_the_index_is_refused(saved, tmp_path, shard, says):
    folder = copy_of(saved[0], tmp_path)
    path, index = _index(folder)
    index["weight_map"][next(iter(index["weight_map"]))] = shard
    path.write_text(json.dumps(index))
    with pytest.raises(ModelError, match=says):
        Checkpoint.open(path)


def test_an_index_that_is_not_one_and_a_folder_of_several_files(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(ModelError, match="received no weight_map"):
        Checkpoint.open(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ModelError, match="text that is not JSON"):
        Checkpoint.open(tmp_path / "model.safetensors.index.json")
    other = tmp_path / "two"
    other.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        (other / name).write_bytes(b"")
    with pytest.raises(ModelError, match="received 2 .safetensors files and no index"):
        Checkpoint.open(other)
