"""Grouped-query attention with RoPE, RMSNorm and the SwiGLU MLP against Hugging Face transformers' Llama
(random weights from a small config, no download): a Llama-style decoder written as an archc spec gives
transformers' hidden states and logits, in torch and through ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from archc.export import export  # noqa: E402
from archc.lower import lower  # noqa: E402
from archc.pipeline import compile_spec  # noqa: E402

VOCAB, DIM, HEADS, KV_HEADS, HIDDEN, LAYERS = 50, 32, 4, 2, 48, 2


def llama_spec() -> dict:
    block = {"params": {}, "layers": [
        {"id": "input_layernorm", "op": "rmsnorm", "eps": 1e-6},
        {"id": "self_attn", "op": "attention", "num_heads": HEADS, "num_kv_heads": KV_HEADS, "bias": False,
         "causal": True, "rope": True, "rope_base": 10000.0},
        {"id": "h", "op": "add", "from": ["x", "self_attn"]},
        {"id": "post_attention_layernorm", "op": "rmsnorm", "eps": 1e-6},
        {"id": "mlp", "op": "gated_mlp", "hidden_features": HIDDEN, "activation": "silu"},
        {"id": "out", "op": "add", "from": ["h", "mlp"]}]}
    return {"archc": 1, "model": {"name": "llama"}, "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64",
                                                                         "vocab": VOCAB}},
            "axes": {"seq": 7}, "blocks": {"layer": block}, "outputs": ["norm", "lm_head"],
            "layers": [{"id": "embed_tokens", "op": "embedding", "num_embeddings": VOCAB, "embedding_dim": DIM},
                       {"id": "layers", "use": "layer", "repeat": LAYERS},
                       {"id": "norm", "op": "rmsnorm", "eps": 1e-6},
                       {"id": "lm_head", "op": "linear", "out_features": VOCAB, "bias": False}]}


def reference() -> torch.nn.Module:
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=DIM, intermediate_size=HIDDEN,
                                      num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                      num_key_value_heads=KV_HEADS, rms_norm_eps=1e-6, rope_theta=10000.0,
                                      max_position_embeddings=64, tie_word_embeddings=False,
                                      attn_implementation="eager")
    torch.manual_seed(1)
    return transformers.LlamaForCausalLM(config).eval()


def copy_weights(ref: torch.nn.Module, module: torch.nn.Module) -> None:
    """transformers' names -> archc's: model. dropped, o_proj is out_proj, layers.N are the block's repeats."""
    ours = dict(module.named_parameters())
    theirs = {k.removeprefix("model.").replace("o_proj", "out_proj"): v for k, v in ref.state_dict().items()}
    assert set(ours) == set(theirs)
    with torch.no_grad():
        for name, p in ours.items():
            p.copy_(theirs[name])


def test_llama_decoder_matches_transformers_in_torch_and_onnx_runtime(tmp_path):
    ref = reference()
    result = compile_spec(llama_spec())
    assert result.graph.total_params == sum(p.numel() for p in ref.parameters())
    module = lower(result.graph).eval()
    copy_weights(ref, module)
    tokens = torch.randint(0, VOCAB, (3, 7))
    with torch.no_grad():
        want = ref(tokens, output_hidden_states=True)
        hidden, logits = module(tokens)
    torch.testing.assert_close(hidden, want.hidden_states[-1], rtol=1e-5, atol=1e-5)  # after the final norm
    torch.testing.assert_close(logits, want.logits, rtol=1e-5, atol=1e-5)
    report = export(result, tmp_path / "llama.onnx", module=module)
    assert report.max_abs_diff <= 1e-4
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "llama.onnx"), providers=["CPUExecutionProvider"])
    hidden, logits = sess.run(None, {"tokens": tokens.numpy()})
    assert np.max(np.abs(hidden - want.hidden_states[-1].numpy())) <= 1e-4
    assert np.max(np.abs(logits - want.logits.numpy())) <= 1e-4


@pytest.mark.parametrize("hf,ours", [("silu", "silu"), ("gelu_pytorch_tanh", "gelu_tanh"), ("gelu", "gelu"),
                                     ("relu", "relu"), ("sigmoid", "sigmoid")])
def test_gated_mlp_is_llamas_mlp(hf, ours):
    """SwiGLU (Llama), GeGLU with tanh GELU (Gemma), exact GeGLU, ReGLU and GLU: transformers' LlamaMLP."""
    from transformers.models.llama.modeling_llama import LlamaMLP
    config = transformers.LlamaConfig(hidden_size=DIM, intermediate_size=HIDDEN, hidden_act=hf)
    ref = LlamaMLP(config).eval()
    g = compile_spec({"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [5, DIM]}},
                      "layers": [{"id": "mlp", "op": "gated_mlp", "hidden_features": HIDDEN,
                                  "activation": ours}]}).graph
    module = lower(g)
    module.mlp.load_state_dict(ref.state_dict())  # strict: the same names and shapes
    x = torch.randn(2, 5, DIM)
    torch.testing.assert_close(module(x), ref(x), rtol=1e-6, atol=1e-6)
