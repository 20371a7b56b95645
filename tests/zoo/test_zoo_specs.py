"""Every spec in specs/zoo/ validates to its published parameter count (which is also the reference library's own
count of the same model, built on the meta device: no memory, no download), quickly, against the shipped
schema, and is written with blocks and repeats rather than copied layers."""
from __future__ import annotations

import importlib
import json
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.pipeline import compile_spec

ZOO = Path(__file__).resolve().parents[2] / "specs" / "zoo"
SPECS = sorted(p for p in ZOO.glob("*.toml") if not p.name.endswith(".weights.toml"))

# spec -> (published count, transformers class, its config); the configs are the published models' own
PUBLISHED = {
    "gpt2": (124_439_808, "GPT2Model", "GPT2Config", {}),
    "bert": (109_482_240, "BertModel", "BertConfig", {}),
    "resnet18": (11_689_512, "ResNetForImageClassification", "ResNetConfig",
                 {"layer_type": "basic", "depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512],
                  "num_labels": 1000}),
    "resnet50": (25_557_032, "ResNetForImageClassification", "ResNetConfig", {"num_labels": 1000}),
    "mobilenet_v2": (3_504_872, "MobileNetV2ForImageClassification", "MobileNetV2Config", {"num_labels": 1000}),
    "vit_b16": (86_567_656, "ViTForImageClassification", "ViTConfig", {"num_labels": 1000}),
    "smollm_135m": (134_515_008, "LlamaForCausalLM", "LlamaConfig",  # HuggingFaceTB/SmolLM-135M's config.json
                    {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "tie_word_embeddings": True}),
    "qwen2_0_5b": (494_032_768, "Qwen2ForCausalLM", "Qwen2Config",  # Qwen/Qwen2-0.5B's config.json
                   {"vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                    "num_attention_heads": 14, "num_key_value_heads": 2, "tie_word_embeddings": True}),
    "whisper_tiny_encoder": (8_208_384, "models.whisper.modeling_whisper.WhisperEncoder", "WhisperConfig",
                             {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6,  # openai/whisper-tiny
                              "encoder_ffn_dim": 1536, "num_mel_bins": 80, "max_source_positions": 1500}),
}


def test_every_zoo_spec_has_a_published_count():
    assert {p.stem for p in SPECS} == set(PUBLISHED)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_zoo_spec_validates_to_its_published_count(path):
    r = CliRunner().invoke(main, ["validate", str(path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["total_params"] == PUBLISHED[path.stem][0]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_count_is_the_reference_librarys_count(name):
    transformers = pytest.importorskip("transformers")
    import torch

    published, model, config, options = PUBLISHED[name]
    with torch.device("meta"):
        cls = transformers
        for part in model.split("."):  # a class the package does not export at its top (WhisperEncoder)
            cls = getattr(cls, part) if hasattr(cls, part) else importlib.import_module(f"{cls.__name__}.{part}")
        reference = cls(getattr(transformers, config)(**options))
    assert reference.num_parameters() == published


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_zoo_spec_validates_in_well_under_a_second(path):
    """Load, check, expand and infer shapes: the best of three, so a busy machine does not fail it."""
    raw = tomllib.loads(path.read_text())
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        compile_spec(raw)
        seconds.append(time.perf_counter() - start)
    assert min(seconds) < 0.5, seconds


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_zoo_spec_is_blocks_and_repeats(path):
    """Written as a user would: every block instantiated by repeats, no layer copied out by hand."""
    text = path.read_text()
    raw = tomllib.loads(text)
    uses = [layer for layer in raw["layers"] if "use" in layer]
    assert raw["blocks"] and len(uses) == 1 and uses[0]["repeat"] in ("$layers", 4, 7), uses
    assert len(text.splitlines()) < 200
    assert "et al. 20" in raw["model"]["doc"], "the doc line names the paper"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_zoo_spec_validates_against_the_shipped_schema(path):
    import jsonschema

    schema_path = ZOO.parents[1] / "archc.schema.json"
    validator = jsonschema.Draft202012Validator(json.loads(schema_path.read_text()))
    text = path.read_text()
    assert (ZOO / text.splitlines()[0].removeprefix("#:schema ")).resolve() == schema_path
    assert [f"{e.json_path}: {e.message}" for e in validator.iter_errors(tomllib.loads(text))] == []
