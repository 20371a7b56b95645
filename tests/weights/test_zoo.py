"""The zoo's GPT-2 small and BERT-base validate to their published parameter counts, which are transformers'
own counts of the same models (built on the meta device: no memory, no download)."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.pipeline import compile_spec

ZOO = Path(__file__).resolve().parents[2] / "specs" / "zoo"
PUBLISHED = [("gpt2", 124_439_808, "GPT2Model", "GPT2Config"), ("bert", 109_482_240, "BertModel", "BertConfig")]


@pytest.mark.parametrize("name, published, model, config", PUBLISHED)
def test_zoo_spec_validates_to_its_published_count(name, published, model, config):
    r = CliRunner().invoke(main, ["validate", str(ZOO / f"{name}.toml"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["total_params"] == published


@pytest.mark.parametrize("name, published, model, config", PUBLISHED)
def test_published_count_is_transformers_count(name, published, model, config):
    transformers = pytest.importorskip("transformers")
    import torch

    with torch.device("meta"):
        reference = getattr(transformers, model)(getattr(transformers, config)())
    assert reference.num_parameters() == published


def test_small_variants_count_like_transformers(small_gpt2, small_bert):
    """The same spec at another size counts like transformers' model at that size."""
    for small in (small_gpt2, small_bert):
        assert compile_spec(small.spec).graph.total_params == small.hf.num_parameters()


def test_zoo_specs_use_blocks_and_repeats():
    """Written as a user would: one block definition repeated `layers` times, not copied layers."""
    for name in ("gpt2", "bert"):
        text = (ZOO / f"{name}.toml").read_text()
        raw = tomllib.loads(text)
        assert len(raw["blocks"]) == 1 and [layer.get("repeat") for layer in raw["layers"] if "use" in layer] == [
            "$layers"]
        assert len(text.splitlines()) < 200


def test_zoo_specs_validate_against_the_shipped_schema():
    """Editors check the zoo specs through their `#:schema` line: `repeat = "$layers"`, which archc accepts, is
    no schema error (the schema had typed `repeat` as a plain integer)."""
    import jsonschema

    schema_path = ZOO.parents[1] / "archc.schema.json"
    validator = jsonschema.Draft202012Validator(json.loads(schema_path.read_text()))
    for name in ("gpt2", "bert"):
        text = (ZOO / f"{name}.toml").read_text()
        assert (ZOO / text.splitlines()[0].split(maxsplit=1)[1]).resolve() == schema_path
        assert [e.message for e in validator.iter_errors(tomllib.loads(text))] == []
