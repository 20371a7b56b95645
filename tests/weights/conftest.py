"""Small Hugging Face transformers models (random weights, no download) saved as the library saves them, and the
zoo specs at the same small size: the same spec with other [params] (and the input's vocab and [axes] to match)."""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ZOO = Path(__file__).resolve().parents[2] / "specs" / "zoo"
SEQ = 12


@dataclass
class Small:
    """A transformers model, its checkpoint as save_pretrained wrote it, the small spec and the zoo mapping."""

    hf: Any
    weights: Path
    spec: Path
    mapping: Path


def zoo_variant(name: str, params: dict[str, Any], vocabs: dict[str, int], out: Path) -> Path:
    """specs/zoo/NAME.toml with `params` replaced, written as JSON to `out`."""
    raw = tomllib.loads((ZOO / f"{name}.toml").read_text())
    assert set(params) <= set(raw["params"]), "only the zoo spec's own params change"
    raw["params"].update(params)
    raw["axes"]["seq"] = SEQ
    for input_name, vocab in vocabs.items():
        raw["inputs"][input_name]["vocab"] = vocab
    out.write_text(json.dumps(raw))
    return out


def _randomize(model: Any, seed: int) -> None:
    """Every tensor moved off its init (norm scales off 1, biases off 0), so a misplaced one cannot hide."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="session")
def small_gpt2(tmp_path_factory) -> Small:
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    _randomize(hf, 1)
    folder = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(folder)  # model.safetensors as the hub holds it (GPT2LMHeadModel: `transformer.` names)
    spec = zoo_variant("gpt2", {"vocab": 256, "context": 64, "dim": 64, "heads": 4, "layers": 2, "pdrop": 0.0},
                       {"tokens": 256}, folder / "gpt2-small-test.json")
    return Small(hf, folder / "model.safetensors", spec, ZOO / "gpt2.weights.toml")


@pytest.fixture(scope="session")
def small_bert(tmp_path_factory) -> Small:
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=300, max_position_embeddings=64,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf = transformers.BertModel(config).eval()
    _randomize(hf, 2)
    folder = tmp_path_factory.mktemp("bert")
    hf.save_pretrained(folder)
    spec = zoo_variant("bert", {"vocab": 300, "context": 64, "dim": 64, "heads": 4, "layers": 2, "ffn": 128,
                                "pdrop": 0.0}, {"tokens": 300}, folder / "bert-small-test.json")
    return Small(hf, folder / "model.safetensors", spec, ZOO / "bert.weights.toml")
