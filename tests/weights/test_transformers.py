"""Proof against the real library: Hugging Face transformers' GPT-2 and BERT (small configs, random weights,
saved by save_pretrained) load through the zoo specs' mapping files, export to ONNX, and ONNX Runtime matches
transformers' logits, hidden states and pooled output to 1e-4; a file that does not fit is one located error."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from archc.cli import main

TOL = 1e-4


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _build(small, tmp_path: Path, weights: Path | None = None, mapping: Path | None = None):
    out = tmp_path / "model.onnx"
    r = run("build", small.spec, "--weights", weights or small.weights, "--map", mapping or small.mapping, "-o", out)
    return r, out


def test_gpt2_logits_match_transformers(small_gpt2, tmp_path):
    r, out = _build(small_gpt2, tmp_path)
    assert r.exit_code == 0, r.output
    assert f"through {small_gpt2.mapping}" in r.output and "loaded 36 tensors" in r.output
    tokens = np.random.default_rng(0).integers(0, 256, (3, 12))
    with torch.no_grad():
        want = small_gpt2.hf(torch.from_numpy(tokens)).logits.numpy()
    import onnx

    meta = {p.key: p.value for p in onnx.load(out, load_external_data=False).metadata_props}
    assert json.loads(meta["archc.weights"]) == {"file": "model.safetensors", "map": "gpt2.weights.toml"}
    (logits,) = _ort(out, {"tokens": tokens})
    assert logits.shape == want.shape == (3, 12, 256)
    assert np.abs(logits - want).max() <= TOL
    short = tokens[:1, :5]  # a shorter sequence: positions are sliced, not baked in at the traced length
    with torch.no_grad():
        assert np.abs(_ort(out, {"tokens": short})[0] - small_gpt2.hf(torch.from_numpy(short)).logits.numpy()).max() <= TOL


def test_bert_hidden_states_and_pooled_output_match_transformers(small_bert, tmp_path):
    r, out = _build(small_bert, tmp_path)
    assert r.exit_code == 0, r.output
    rng = np.random.default_rng(1)
    tokens, types = rng.integers(0, 300, (2, 12)), rng.integers(0, 2, (2, 12))
    with torch.no_grad():
        ref = small_bert.hf(input_ids=torch.from_numpy(tokens), token_type_ids=torch.from_numpy(types))
    hidden, pooled = _ort(out, {"tokens": tokens, "token_types": types})
    assert np.abs(hidden - ref.last_hidden_state.numpy()).max() <= TOL
    assert np.abs(pooled - ref.pooler_output.numpy()).max() <= TOL


def test_the_checkpoint_is_in_transformers_own_naming(small_gpt2):
    """Not a copy of its naming: the names are what save_pretrained wrote (nested, Conv1D-transposed, fused)."""
    names = set(load_file(small_gpt2.weights))
    assert "transformer.h.1.attn.c_attn.weight" in names and "transformer.wte.weight" in names
    assert load_file(small_gpt2.weights)["transformer.h.0.attn.c_attn.weight"].shape == (64, 192)


def _edited(small, tmp_path: Path, edit) -> Path:
    tensors = load_file(small.weights)
    edit(tensors)
    path = tmp_path / "edited.safetensors"
    save_file(tensors, path)
    return path


def test_missing_extra_and_misshaped_tensors_are_one_located_error(small_gpt2, tmp_path):
    def edit(t):
        del t["transformer.h.1.ln_2.bias"]
        t["transformer.h.0.extra.weight"] = torch.zeros(3)
        t["transformer.h.0.mlp.c_fc.weight"] = t["transformer.h.0.mlp.c_fc.weight"].t().contiguous()

    r, out = _build(small_gpt2, tmp_path, _edited(small_gpt2, tmp_path, edit))
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output
    line = lines[0]
    assert line.startswith(f"error: {tmp_path / 'edited.safetensors'}: --map {small_gpt2.mapping}: expected every "
                           "tensor of the model filled exactly once and every tensor of the file used, received")
    assert "1 missing: h.1.ln_2.bias [64]" in line
    assert "1 extra: transformer.h.0.extra.weight [3]" in line
    assert ("1 mis-shaped: h.0.fc.weight: expected [256, 64], received [64, 256] from "
            "transformer.h.0.mlp.c_fc.weight by map[4]") in line
    assert not out.exists()


def test_mask_buffers_load_only_when_the_mapping_drops_them(small_gpt2, tmp_path):
    """Older transformers saved GPT-2's causal mask as h.{i}.attn.bias: skipped because the zoo mapping declares
    it; a mapping without that line reports it as an extra tensor instead of ignoring it."""
    masked = _edited(small_gpt2, tmp_path, lambda t: t.update(
        {f"transformer.h.{i}.attn.bias": torch.ones(1, 1, 64, 64).tril() for i in range(2)}))
    r, _ = _build(small_gpt2, tmp_path, masked)
    assert r.exit_code == 0 and "2 dropped" in r.output, r.output
    strict = tmp_path / "strict.toml"
    strict.write_text(small_gpt2.mapping.read_text().replace('"h.{i}.attn.bias", ', ""))
    r, _ = _build(small_gpt2, tmp_path, masked, strict)
    assert r.exit_code == 1 and "2 extra: transformer.h.0.attn.bias [1, 1, 64, 64], transformer.h.1.attn.bias" \
        in r.output, r.output


def test_gpt2model_naming_as_on_the_hub_loads_too(small_gpt2, tmp_path):
    """The hub's gpt2 model.safetensors is GPT2Model's naming (no `transformer.`), masks included."""
    tensors = {k: v.contiguous() for k, v in small_gpt2.hf.transformer.state_dict().items()}
    tensors |= {f"h.{i}.attn.bias": torch.ones(1, 1, 64, 64).tril() for i in range(2)}
    save_file(tensors, tmp_path / "hub.safetensors")
    r, out = _build(small_gpt2, tmp_path, tmp_path / "hub.safetensors")
    assert r.exit_code == 0 and "(28 read, 2 dropped" in r.output, r.output
    tokens = np.arange(10)[None] * 7
    with torch.no_grad():
        want = small_gpt2.hf(torch.from_numpy(tokens)).logits.numpy()
    assert np.abs(_ort(out, {"tokens": tokens})[0] - want).max() <= TOL


def test_bert_file_against_the_gpt2_mapping_names_everything(small_bert, small_gpt2, tmp_path):
    r, _ = _build(small_gpt2, tmp_path, small_bert.weights)
    assert r.exit_code == 1
    assert "missing: wte.weight [256, 64]" in r.output and "and 28 more" in r.output
    assert "39 extra: embeddings.LayerNorm.bias [64], embeddings.LayerNorm.weight [64]" in r.output
