"""Partial rotary embeddings (rope_dims), a fused QKV projection and parallel residuals against Hugging Face
transformers' GPT-NeoX (random weights from a small config, no download), in torch and ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from archc.export import export  # noqa: E402
from archc.lower import lower  # noqa: E402
from archc.pipeline import compile_spec  # noqa: E402

VOCAB, DIM, HEADS, LAYERS = 40, 32, 4, 2
HEAD = DIM // HEADS


def neox_spec() -> dict:
    block = {"layers": [  # GPT-NeoX's parallel residual: x + attention(ln1(x)) + mlp(ln2(x))
        {"id": "input_layernorm", "op": "layernorm", "from": "x"},
        {"id": "attention", "op": "attention", "num_heads": HEADS, "fused_qkv": True, "causal": True,
         "rope": True, "rope_dims": HEAD // 2},
        {"id": "post_attention_layernorm", "op": "layernorm", "from": "x"},
        {"id": "dense_h_to_4h", "op": "linear", "out_features": 4 * DIM, "act": "gelu"},
        {"id": "dense_4h_to_h", "op": "linear", "out_features": DIM},
        {"id": "sum", "op": "add", "from": ["x", "attention", "dense_4h_to_h"]}]}
    return {"archc": 1, "model": {"name": "neox"},
            "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": VOCAB}}, "axes": {"seq": 9},
            "blocks": {"layer": block},
            "layers": [{"id": "embed_in", "op": "embedding", "num_embeddings": VOCAB, "embedding_dim": DIM},
                       {"id": "layers", "use": "layer", "repeat": LAYERS},
                       {"id": "final_layer_norm", "op": "layernorm"},
                       {"id": "embed_out", "op": "linear", "out_features": VOCAB, "bias": False}]}


def reference() -> torch.nn.Module:
    config = transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=DIM, num_hidden_layers=LAYERS,
                                        num_attention_heads=HEADS, intermediate_size=4 * DIM, rotary_pct=0.5,
                                        rotary_emb_base=10000, max_position_embeddings=64, hidden_act="gelu",
                                        use_parallel_residual=True, tie_word_embeddings=False,
                                        attn_implementation="eager")
    torch.manual_seed(2)
    return transformers.GPTNeoXForCausalLM(config).eval()


def neox_to_archc(name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """GPT-NeoX interleaves q, k, v per head ((H, 3, d) rows); archc's qkv_proj stacks them ((3, H, d))."""
    name = name.removeprefix("gpt_neox.").replace("attention.dense", "attention.out_proj").replace(
        "mlp.", "").replace("query_key_value", "qkv_proj").replace("lm_head", "embed_out")  # transformers 5: lm_head
    if "qkv_proj" in name:
        tensor = tensor.reshape(HEADS, 3, HEAD, -1).transpose(0, 1).reshape(tensor.shape)
    return name, tensor


def test_gpt_neox_matches_transformers_in_torch_and_onnx_runtime(tmp_path):
    ref = reference()
    assert ref.config.rope_parameters.get("partial_rotary_factor") == 0.5
    result = compile_spec(neox_spec())
    assert result.graph.total_params == sum(p.numel() for p in ref.parameters())
    module = lower(result.graph).eval()
    theirs = dict(neox_to_archc(k, v) for k, v in ref.state_dict().items())
    module.load_state_dict(theirs, strict=True)
    tokens = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        want = ref(tokens).logits
        torch.testing.assert_close(module(tokens), want, rtol=1e-5, atol=1e-5)
    export(result, tmp_path / "neox.onnx", module=module)
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "neox.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"tokens": tokens.numpy()})
    assert np.max(np.abs(logits - want.numpy())) <= 1e-4
