"""Proof against the real library: Hugging Face transformers' Llama, ViT and ResNet (small configs, random
weights moved off their init, saved by save_pretrained as safetensors) load through the zoo specs' mapping
files into the zoo specs at the same size (only [params] and the input's size changed), export to ONNX, and
ONNX Runtime matches transformers' logits to 1e-4."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.lower import lower
from archc.pipeline import compile_spec
from archc.weights import load_into

transformers = pytest.importorskip("transformers")
import torch  # noqa: E402

TOL = 1e-4
ZOO = Path(__file__).resolve().parents[2] / "specs" / "zoo"


def zoo_variant(name: str, params: dict[str, Any], out: Path, inputs: dict[str, dict] | None = None,
                seq: int | None = None, block: dict[str, dict[str, Any]] | None = None) -> Path:
    """specs/zoo/NAME.toml with `params` replaced (and input fields, the traced `seq`, attributes added to layers of
    its block by id), written as JSON to `out`."""
    raw = tomllib.loads((ZOO / f"{name}.toml").read_text())
    for layer in (layer for b in raw.get("blocks", {}).values() for layer in b["layers"]):
        layer.update((block or {}).get(layer.get("id"), {}))
    assert set(params) <= set(raw["params"]), "only the zoo spec's own params change"
    raw["params"].update(params)
    for input_name, fields in (inputs or {}).items():
        raw["inputs"][input_name].update(fields)
    if seq is not None:
        raw["axes"]["seq"] = seq
    out.write_text(json.dumps(raw))
    return out


def randomize(model: Any, seed: int) -> None:
    """Every tensor moved off its init (scales off 1, biases off 0, running statistics off 0 and 1), so a misplaced
    tensor cannot hide behind a default value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.add_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.mul_(torch.rand(b.shape, generator=g) + 0.5)


def calibrate(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Batch-norm statistics of real activations (a trained model's are; random ones make logits of 1e3 and
    compare float32 rounding, not the model): cumulative averages over one forward pass in train mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        model.train()(x)
    model.eval()


def build(spec: Path, weights: Path, mapping: Path, out: Path) -> str:
    r = CliRunner().invoke(main, ["build", str(spec), "--weights", str(weights), "--map", str(mapping),
                                  "-o", str(out)])
    assert r.exit_code == 0, r.output
    return r.output


def ort_run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def saved(model: torch.nn.Module, folder: Path, seed: int | None = None) -> Path:
    if seed is not None:
        randomize(model, seed)
    model.eval().save_pretrained(folder)  # model.safetensors, in the library's own naming
    return folder / "model.safetensors"


SMALL = {"vocab": 256, "dim": 64, "heads": 4, "kv_heads": 2, "layers": 2, "ffn": 96}  # the small decoders' [params]
SMALL_CONFIG = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)


def small_decoder(tmp_path: Path, hf: Any, name: str, mapping: str, seed: int, block: dict | None = None,
                  count: bool = True) -> tuple[str, np.ndarray, np.ndarray]:
    """transformers' causal LM `hf` (at SMALL_CONFIG) saved, loaded through `mapping` into zoo spec `name` at SMALL
    (12 tokens traced; `block`: attributes added to its block's layers) and built: the build's output, tokens
    (3 x 12) and ONNX Runtime's logits for them, which equal transformers' within TOL. `count`: the spec's parameter
    count is transformers' own."""
    weights = saved(hf, tmp_path, seed)
    spec = zoo_variant(name, SMALL, tmp_path / f"{name}-small.json", {"tokens": {"vocab": 256}}, seq=12, block=block)
    if count:
        assert compile_spec(json.loads(spec.read_text())).graph.total_params == hf.num_parameters()
    output = build(spec, weights, ZOO / mapping, tmp_path / f"{name}.onnx")
    tokens = np.random.default_rng(0).integers(0, 256, (3, 12))
    with torch.no_grad():
        want = hf(torch.from_numpy(tokens)).logits.numpy()
    (logits,) = ort_run(tmp_path / f"{name}.onnx", {"tokens": tokens})
    assert logits.shape == want.shape == (3, 12, 256)
    assert np.abs(logits - want).max() <= TOL
    return output, tokens, want


def test_llama_logits_match_transformers(tmp_path):
    """SmolLM-135M's spec at 2 layers, width 64, 4 query heads sharing 2 key/value heads, tied embeddings."""
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL_CONFIG, rms_norm_eps=1e-5, rope_theta=1e4))
    output, tokens, _ = small_decoder(tmp_path, hf, "smollm_135m", "llama.weights.toml", 1)
    assert "loaded 20 tensors" in output, output  # embed_tokens, 9 per layer, norm: the tied head is none
    short = tokens[:1, :5]  # rotary positions are computed for the sequence given, not the traced length
    with torch.no_grad():
        want = hf(torch.from_numpy(short)).logits.numpy()
    assert np.abs(ort_run(tmp_path / "smollm_135m.onnx", {"tokens": short})[0] - want).max() <= TOL


def test_qwen2_logits_match_transformers(tmp_path):
    """Qwen2-0.5B's spec at 2 layers, width 64: biases on q, k and v, none on the output projection (the parameter
    count is transformers' own), grouped-query attention, RoPE at base 1e6, RMSNorm, SwiGLU, tied embeddings."""
    torch.manual_seed(0)
    hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**SMALL_CONFIG, rms_norm_eps=1e-6, rope_theta=1e6))
    output, _, _ = small_decoder(tmp_path, hf, "qwen2_0_5b", "qwen2.weights.toml", 3)
    assert "loaded 26 tensors" in output, output  # embed_tokens, 12 per layer, norm: no o_proj.bias, no lm_head


def test_mistral_sliding_window_logits_match_transformers(tmp_path):
    """Mistral is the Llama spec with a sliding window: at window 4 over 12 tokens the logits match transformers'
    MistralForCausalLM (which differ from full causal attention's, so the window is what is checked), and the
    KV-cache file (its window across past and new keys) passes its step-by-step check."""
    config = transformers.MistralConfig(**SMALL_CONFIG, rms_norm_eps=1e-5, rope_theta=1e4, sliding_window=4)
    torch.manual_seed(0)
    hf = transformers.MistralForCausalLM(config)
    output, tokens, want = small_decoder(tmp_path, hf, "smollm_135m", "llama.weights.toml", 4,
                                         block={"self_attn": {"window": 4}})
    assert "KV cache:" in output and "match the full recompute" in output, output
    full = transformers.MistralForCausalLM(transformers.MistralConfig(**{**config.to_dict(), "sliding_window": None}))
    full.load_state_dict(hf.state_dict())
    with torch.no_grad():
        assert np.abs(full.eval()(torch.from_numpy(tokens)).logits.numpy() - want).max() > 100 * TOL


def test_whisper_encoder_matches_transformers(tmp_path):
    """Whisper-tiny's encoder spec at 2 layers, width 64, 16 mel bins, 12 positions, loaded from a whole
    WhisperForConditionalGeneration checkpoint (its decoder dropped by the mapping): k_proj without a bias (the
    parameter count is transformers' own), GELU convolutions, the position table; the last hidden state matches."""
    config = transformers.WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                                        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128,
                                        num_mel_bins=16, max_source_positions=12, max_target_positions=16,
                                        vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                        decoder_start_token_id=1)
    torch.manual_seed(0)
    hf = transformers.WhisperForConditionalGeneration(config)
    weights = saved(hf, tmp_path, 5)
    encoder = hf.model.encoder
    spec = zoo_variant("whisper_tiny_encoder", {"mels": 16, "positions": 12, "dim": 64, "heads": 4, "layers": 2,
                                                "ffn": 128}, tmp_path / "whisper-small.json",
                       {"features": {"shape": [16, 24]}})
    assert compile_spec(json.loads(spec.read_text())).graph.total_params == encoder.num_parameters()
    output = build(spec, weights, ZOO / "whisper.weights.toml", tmp_path / "whisper.onnx")
    assert "loaded 37 tensors" in output, output  # convs 4, positions, final norm 2, 15 per layer (no k bias)
    x = np.random.default_rng(2).standard_normal((2, 16, 24)).astype(np.float32)
    with torch.no_grad():
        want = encoder(torch.from_numpy(x)).last_hidden_state.numpy()
    (hidden,) = ort_run(tmp_path / "whisper.onnx", {"features": x})
    assert hidden.shape == want.shape == (2, 12, 64)
    assert np.abs(hidden - want).max() <= TOL


def test_vit_logits_match_transformers(tmp_path):
    """ViT-B/16's spec at 32x32 images, 8x8 patches, 2 layers of width 64; transformers' separate q, k, v
    projections are concatenated into the spec's fused qkv_proj by the mapping."""
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=128, num_labels=10,
                                    layer_norm_eps=1e-6, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(config)
    weights = saved(hf, tmp_path, 2)
    spec = zoo_variant("vit_b16", {"image": 32, "patch": 8, "dim": 64, "heads": 4, "layers": 2, "mlp": 128,
                                   "classes": 10}, tmp_path / "vit-small.json", {"x": {"shape": [3, 32, 32]}})
    build(spec, weights, ZOO / "vit.weights.toml", tmp_path / "vit.onnx")
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = hf(pixel_values=torch.from_numpy(x)).logits.numpy()
    (logits,) = ort_run(tmp_path / "vit.onnx", {"x": x})
    assert logits.shape == want.shape == (2, 10)
    assert np.abs(logits - want).max() <= TOL


@pytest.mark.parametrize("name, options", [
    ("resnet18", {"layer_type": "basic", "depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512]}),
    ("resnet50", {"layer_type": "bottleneck", "depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048]}),
])
def test_resnet_logits_match_transformers(tmp_path, name, options):
    """Full width and depth (the specs' stage tables are the papers'), 10 classes, 64x64 images; transformers'
    ResNet is torchvision's v1.5, so one mapping file serves both depths."""
    config = transformers.ResNetConfig(embedding_size=64, num_labels=10, downsample_in_first_stage=False,
                                       downsample_in_bottleneck=False, **options)
    torch.manual_seed(0)
    hf = transformers.ResNetForImageClassification(config)
    randomize(hf, 3)
    calibrate(hf, torch.randn(8, 3, 64, 64))
    weights = saved(hf, tmp_path)
    spec = zoo_variant(name, {"classes": 10}, tmp_path / f"{name}-small.json", {"x": {"shape": [3, 64, 64]}})
    build(spec, weights, ZOO / "resnet.weights.toml", tmp_path / "resnet.onnx")
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = hf(pixel_values=torch.from_numpy(x)).logits.numpy()
    (logits,) = ort_run(tmp_path / "resnet.onnx", {"x": x})
    assert logits.shape == want.shape == (2, 10) and 1 < np.abs(want).max() < 100
    # ONNX Runtime's convolutions (MLAS) round differently from torch's: 53 layers deep that is up to 3e-4 on
    # logits of about 6 (the same against archc's own torch module), so relative to the logits' scale here ...
    assert np.abs(logits - want).max() <= TOL * np.abs(want).max()
    # ... while in torch the spec, loaded through the mapping, is transformers' model to float32 rounding
    module = lower(compile_spec(json.loads(spec.read_text())).graph).eval()
    load_into(module, weights, ZOO / "resnet.weights.toml")
    with torch.no_grad():
        assert (module(torch.from_numpy(x)) - torch.from_numpy(want)).abs().max() <= 1e-5


def test_mobilenet_v2_logits_match_transformers_with_symmetric_padding(tmp_path):
    """transformers' MobileNetV2 is torchvision's (and the spec's) with tf_padding = false (its default pads
    TensorFlow's asymmetric "SAME" way) and layer_norm_eps = 1e-5 (its default is TensorFlow's 1e-3): then, at
    full width and depth, 10 classes and 64x64 images, its logits are the spec's. Its 16 blocks after the stem are
    numbered flat (`layer.K`), the spec's by stage and block: the mapping's [numbering.n] splits the number."""
    config = transformers.MobileNetV2Config(tf_padding=False, layer_norm_eps=1e-5, num_labels=10,
                                            classifier_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = transformers.MobileNetV2ForImageClassification(config)
    randomize(hf, 4)
    calibrate(hf, torch.randn(8, 3, 64, 64))
    weights = saved(hf, tmp_path)
    spec = zoo_variant("mobilenet_v2", {"classes": 10}, tmp_path / "mobilenet.json", {"x": {"shape": [3, 64, 64]}})
    output = build(spec, weights, ZOO / "mobilenet_v2.transformers.weights.toml", tmp_path / "m.onnx")
    assert "loaded 314 tensors" in output, output  # strict: every tensor of the spec filled, of the file used
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = hf(pixel_values=torch.from_numpy(x)).logits.numpy()
    (logits,) = ort_run(tmp_path / "m.onnx", {"x": x})
    assert logits.shape == want.shape == (2, 10) and 0.1 < np.abs(want).max() < 100
    assert np.abs(logits - want).max() <= TOL


def test_a_resnet18_checkpoint_into_resnet50_is_one_located_error(tmp_path):
    """The mapping serves both depths, the loader stays strict: a checkpoint of the other depth names what is
    missing and mis-shaped, exit 1, nothing written."""
    config = transformers.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                                       num_labels=10)
    weights = saved(transformers.ResNetForImageClassification(config), tmp_path)
    spec = zoo_variant("resnet50", {"classes": 10}, tmp_path / "r50.json", {"x": {"shape": [3, 64, 64]}})
    out = tmp_path / "r50.onnx"
    r = CliRunner().invoke(main, ["build", str(spec), "--weights", str(weights), "--map",
                                  str(ZOO / "resnet.weights.toml"), "-o", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    (line,) = r.output.strip().splitlines()
    assert "198 missing: stages.0.blocks.0.conv3.weight [256, 64, 1, 1]" in line, line
    assert "24 mis-shaped: fc.weight: expected [10, 2048], received [10, 512] from classifier.1.weight" in line
    assert ("stages.0.blocks.0.conv1.weight: expected [64, 64, 1, 1], received [64, 64, 3, 3] from "
            "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight by map[6]") in line
    assert not out.exists()


def test_t5_logits_match_transformers(tmp_path):
    """T5-small's spec at 2 + 2 layers, width 64, 4 heads, T5's own 32 buckets up to distance 128: an encoder-decoder
    with one shared table (both lookups and the tied head read the file's one `shared.weight`), the relative position
    bias in both stacks (bidirectional, causal), unscaled scores and the d_model^-0.5 before the head. Sequences past
    max_distance reach the shared last bucket."""
    import onnx

    config = transformers.T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                                   num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                                   tie_word_embeddings=True)
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(config)
    weights = saved(hf, tmp_path, 4)
    spec = zoo_variant("t5_small", {"vocab": 256, "dim": 64, "heads": 4, "layers": 2, "ffn": 128},
                       tmp_path / "t5-small.json", {"tokens": {"vocab": 256}, "decoder_tokens": {"vocab": 256}}, seq=20)
    assert compile_spec(json.loads(spec.read_text())).graph.total_params == hf.num_parameters()
    output = build(spec, weights, ZOO / "t5_small.weights.toml", tmp_path / "t5.onnx")
    # shared, 2 position tables, 2 final norms, 8 per encoder block, 13 per decoder block
    assert "loaded 47 tensors" in output, output
    model = onnx.load(tmp_path / "t5.onnx")
    tables = [t.name for t in model.graph.initializer if tuple(t.dims) == (256, 64)]
    assert tables == ["shared.weight"], tables  # one table in the file, read by three nodes
    rng = np.random.default_rng(5)
    for (batch, src, tgt) in ((2, 20, 9), (1, 150, 135)):  # the second past max_distance both ways
        tokens, decoder = rng.integers(0, 256, (batch, src)), rng.integers(0, 256, (batch, tgt))
        decoder[:, 0] = 0  # T5's decoder_start_token_id, as generate() starts
        with torch.no_grad():
            want = hf(input_ids=torch.from_numpy(tokens), decoder_input_ids=torch.from_numpy(decoder)).logits.numpy()
        (logits,) = ort_run(tmp_path / "t5.onnx", {"tokens": tokens, "decoder_tokens": decoder})
        assert logits.shape == want.shape == (batch, tgt, 256)
        assert np.abs(logits - want).max() <= TOL, np.abs(logits - want).max()
