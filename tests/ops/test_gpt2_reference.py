"""GPT-2's block as a spec (fused QKV, `act = { op = "gelu", approximate = "tanh" }`, tied output) against
Hugging Face transformers' GPT2LMHeadModel (random weights from a small config, no download)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from archc.export import export  # noqa: E402
from archc.lower import lower  # noqa: E402
from archc.pipeline import compile_spec  # noqa: E402

VOCAB, DIM, HEADS, LAYERS, CONTEXT = 60, 32, 4, 2, 16


def gpt2_spec() -> dict:
    block = {"layers": [
        {"id": "ln_1", "op": "layernorm"},
        {"id": "attn", "op": "attention", "num_heads": HEADS, "fused_qkv": True, "causal": True},
        {"id": "h", "op": "add", "from": ["x", "attn"]},
        {"id": "ln_2", "op": "layernorm"},
        {"id": "c_fc", "op": "linear", "out_features": 4 * DIM, "act": {"op": "gelu", "approximate": "tanh"}},
        {"id": "c_proj", "op": "linear", "out_features": DIM},
        {"id": "out", "op": "add", "from": ["h", "c_proj"]}]}
    return {"archc": 1, "model": {"name": "gpt2"},
            "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": VOCAB}}, "axes": {"seq": 10},
            "blocks": {"block": block},
            "layers": [{"id": "wte", "op": "embedding", "num_embeddings": VOCAB, "embedding_dim": DIM},
                       {"id": "wpe", "op": "pos_embedding", "max_len": CONTEXT},
                       {"id": "h", "use": "block", "repeat": LAYERS},
                       {"id": "ln_f", "op": "layernorm"},
                       {"id": "lm_head", "op": "tied_linear", "tie": "wte"}]}


def gpt2_to_archc(name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """transformers' names -> archc's; GPT-2's Conv1D stores (in, out): transposed to Linear's (out, in)."""
    if name == "lm_head.weight":
        return None  # tied to wte
    name = name.removeprefix("transformer.").replace("attn.c_attn", "attn.qkv_proj").replace(
        "attn.c_proj", "attn.out_proj").replace("mlp.", "")
    conv1d = name.endswith(".weight") and any(k in name for k in ("qkv_proj", "out_proj", "c_fc", "c_proj"))
    return name, tensor.t() if conv1d else tensor


def test_gpt2_matches_transformers_in_torch_and_onnx_runtime(tmp_path):
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=DIM, n_head=HEADS, n_layer=LAYERS,
                                     n_positions=CONTEXT, activation_function="gelu_new",
                                     attn_implementation="eager")
    torch.manual_seed(3)
    ref = transformers.GPT2LMHeadModel(config).eval()
    result = compile_spec(gpt2_spec())
    assert result.graph.total_params == sum(p.numel() for p in ref.parameters())  # tied: counted once
    module = lower(result.graph).eval()
    # older transformers keep the causal mask as buffers attn.bias / attn.masked_bias: not weights
    mapped = [gpt2_to_archc(k, v) for k, v in ref.state_dict().items()
              if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    module.load_state_dict(dict(m for m in mapped if m is not None), strict=True)
    tokens = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        want = ref(tokens).logits
        torch.testing.assert_close(module(tokens), want, rtol=1e-5, atol=1e-5)
    export(result, tmp_path / "gpt2.onnx", module=module)
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "gpt2.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"tokens": tokens.numpy()})
    assert np.max(np.abs(logits - want.numpy())) <= 1e-4
