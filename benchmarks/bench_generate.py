"""Figure 12: byte generation with the KV cache (`archc infer --prompt`, model.kv.onnx) vs the full recompute of
the window per token (`--no-cache`), and vs Hugging Face transformers' cached `generate` on the same architecture
and weights. Goal: cache >= 5x recompute at context 128.

Rows: gpt_stdlib (random weights: speed does not depend on them) filling its 128-byte context from a 4-byte
prompt; the same past the context (the window slides, positions shift, so each later step recomputes the
window: the cache cannot help there, reported as is); then a GPT-2-architecture spec of gpt_stdlib's size (fused QKV,
tanh GELU, learned positions, tied head) with a transformers GPT2LMHeadModel's random weights loaded into it,
generating greedily on both sides (the tokens are checked equal), transformers on torch with its KV cache.
Then GPT-2 small (specs/zoo/gpt2.toml, random weights) against transformers' cached `generate`
(goal >= 2x on CPU); and batching (issue 22 item 4): 8 prompts of different lengths in one `generate_many` call
(`archc infer --prompts`) against 8 single `generate` calls (`--prompt` each), greedy, the tokens checked equal,
for gpt_stdlib and GPT-2 small.
Each pair runs interleaved in this process; figures are medians of tokens/s.
"""
from __future__ import annotations

import time

import common

FIGURE = 12
KEY = "generate"
TITLE = "Generation: KV cache vs recompute, and vs transformers' cached generate"
A, B = "archc KV cache (tokens/s)", "other side (tokens/s)"
GOAL = 5.0
LM = "gpt_stdlib"
QUICK_LM = "transformer_block_demo"  # --quick: the smaller language model of common.QUICK_SPECS
PROMPT = "def "
# 8 prompts of 3..10 bytes: no two alike in length but two, so rows join the batch as they catch up
PROMPTS = ["def", "class", "import", "return x", "for i in", "while ", "if x:", "print(x)"]
GPT2_GOAL = 2.0


def cached_build(name: str, path_or_raw, module=None):
    """The spec built once (common.build) with its model.kv.onnx beside it; module replaces the seeded one."""
    from archc.export.kvcache import export_cache

    built = common.build(name, path_or_raw)
    if module is not None:  # other weights: export again into the same file
        from archc.export import export

        built.report = export(built.compiled, built.path, module=module)
        built.module = module
    export_cache(built.compiled, built.module, built.path)
    return built


def speed(fns: dict, tokens: int, rounds: int) -> dict[str, float]:
    """Median tokens/s of each side, and under "ratio:<k>" the paired ratio first side / side k (per round: the
    two ran back to back, so the load's drift on this shared machine cancels within a pair)."""
    times = common.interleave(fns, rounds=rounds, warmup=1)
    first = next(iter(times))
    out = {k: tokens / common.median(v) for k, v in times.items()}
    return out | {f"ratio:{k}": common.paired_ratio(v, times[first]) for k, v in times.items() if k != first}


def archc_rows(quick: bool) -> list[dict]:
    from archc.runtime import Model, generate

    lm = QUICK_LM if quick else LM
    path = common.spec_path(lm)
    if path is None:
        return [common.skipped(FIGURE, f"{lm} generation", "spec not in specs/")]
    model = Model.open(cached_build(lm, path).path, device="cpu")
    rounds = 2 if quick else 7
    rows = []
    for new, what in ((12, "12 bytes") if quick else (124, "124 bytes: the 128-byte context filled"),
                      (24, "24 bytes") if quick else (384, "384 bytes: past the context, the window slides")):
        results = {}
        fns = {c: (lambda c=c: results.__setitem__(c, generate(model, PROMPT, max_new_tokens=new, temperature=0,
                                                                cache=c))) for c in (True, False)}
        rate = speed(fns, new, rounds)
        same = results[True].tokens == results[False].tokens and results[True].cached
        ratio = rate["ratio:False"]
        first = not rows
        rows.append(common.row(FIGURE, f"{lm}: {what} after a 4-byte prompt, greedy; b = recompute (--no-cache)",
                               rate[True], rate[False], goal=">= 5x" if first else "",
                               met=common.at_least(ratio, GOAL) if first else None, ratio=ratio,
                               note=f"speedup {ratio:.1f}x; greedy bytes identical with and without the cache: "
                                    f"{same}" + ("" if first else "; past the context positions shift, so each "
                                                 "step recomputes the window (only the first 124 use the cache)")))
    return rows


def gpt2_spec(vocab: int, dim: int, heads: int, layers: int, context: int, positions: int) -> dict:
    """GPT-2's architecture (tests/ops/test_gpt2_reference.py) as a byte-level language model."""
    block = {"layers": [
        {"id": "ln_1", "op": "layernorm"},
        {"id": "attn", "op": "attention", "num_heads": heads, "fused_qkv": True, "causal": True},
        {"id": "h", "op": "add", "from": ["x", "attn"]},
        {"id": "ln_2", "op": "layernorm"},
        {"id": "c_fc", "op": "linear", "out_features": 4 * dim, "act": {"op": "gelu", "approximate": "tanh"}},
        {"id": "c_proj", "op": "linear", "out_features": dim},
        {"id": "out", "op": "add", "from": ["h", "c_proj"]}]}
    return {"archc": 1, "model": {"name": "gpt2-bytes"}, "task": {"kind": "language_model"},
            "inputs": {"tokens": {"shape": ["seq"], "dtype": "int64", "vocab": vocab}}, "axes": {"seq": context},
            "blocks": {"block": block},
            "layers": [{"id": "wte", "op": "embedding", "num_embeddings": vocab, "embedding_dim": dim},
                       {"id": "wpe", "op": "pos_embedding", "max_len": positions},
                       {"id": "h", "use": "block", "repeat": layers},
                       {"id": "ln_f", "op": "layernorm"},
                       {"id": "lm_head", "op": "tied_linear", "tie": "wte"}]}


def gpt2_pair(vocab: int, dim: int, heads: int, layers: int, context: int, positions: int):
    """A transformers GPT2LMHeadModel with random weights and archc's Model of the same architecture and weights
    (cache file beside it), or None when transformers is not installed."""
    try:
        import torch
        import transformers
    except ImportError:
        return None
    from archc.lower import lower
    from archc.pipeline import compile_spec
    from archc.runtime import Model

    config = transformers.GPT2Config(vocab_size=vocab, n_embd=dim, n_head=heads, n_layer=layers,
                                     n_positions=positions, activation_function="gelu_new",
                                     attn_implementation="eager")
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(config).eval()
    raw = gpt2_spec(vocab, dim, heads, layers, context, positions)
    module = lower(compile_spec(raw).graph, seed=0).eval()
    state = {}
    for k, v in ref.state_dict().items():  # as specs/zoo/gpt2.weights.toml maps a checkpoint (fused qkv kept)
        if k == "lm_head.weight" or k.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        k = k.removeprefix("transformer.").replace("attn.c_attn", "attn.qkv_proj").replace(
            "attn.c_proj", "attn.out_proj").replace("mlp.", "")
        conv1d = k.endswith(".weight") and any(s in k for s in ("qkv_proj", "out_proj", "c_fc", "c_proj"))
        state[k] = v.t() if conv1d else v
    module.load_state_dict(state, strict=True)
    model = Model.open(cached_build(f"gpt2_{dim}x{layers}", raw, module=module).path, device="cpu")
    return ref, model


def hf_generate(ref, prompt: bytes, new: int) -> list[int]:
    import torch

    with torch.inference_mode():
        out = ref.generate(torch.tensor([list(prompt)]), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                           use_cache=True, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def transformers_row(quick: bool) -> dict:
    vocab, dim, heads, layers, context = (256, 32, 2, 2, 32) if quick else (256, 128, 4, 4, 128)
    new = 12 if quick else 124
    name = (f"GPT-2 architecture ({vocab} vocab, {dim} wide, {heads} heads, {layers} layers"
            f"{'' if quick else ': gpt_stdlib size'}): {new} bytes, greedy; b = transformers "
            "GPT2LMHeadModel.generate(use_cache=True), torch CPU")
    pair = gpt2_pair(vocab, dim, heads, layers, context, context)
    if pair is None:
        return common.skipped(FIGURE, name, "transformers is not installed (pip install -e '.[test]')")
    import torch
    import transformers

    from archc.runtime import generate

    ref, model = pair
    results: dict[str, list[int]] = {}
    fns = {"archc": lambda: results.__setitem__("archc", generate(model, PROMPT, new, temperature=0).tokens),
           "hf": lambda: results.__setitem__("hf", hf_generate(ref, PROMPT.encode(), new))}
    rate = speed(fns, new, 2 if quick else 7)
    ratio = rate["ratio:hf"]
    return common.row(FIGURE, name, rate["archc"], rate["hf"], goal=">= 5x", met=common.at_least(ratio, GOAL),
                      ratio=ratio, note=f"same weights; greedy tokens identical to transformers': "
                                        f"{results['archc'] == results['hf']}; torch {torch.get_num_threads()} "
                                        f"threads, transformers {transformers.__version__}")


def weight_read(params: int):
    """A step that only reads `params` float32 weights once: one numpy matrix-vector product over that many values
    (what a batch-1 decode step of a model that size must at least do, at numpy's BLAS thread count)."""
    import numpy as np

    w = np.random.default_rng(0).random((params // 768, 768), dtype=np.float32)
    x = np.ones(768, np.float32)
    return lambda: w @ x


def batched_row(model, name: str, new: int, rounds: int) -> dict:
    """8 prompts in one generate_many call vs 8 generate calls: total new tokens/s, greedy, tokens compared."""
    from archc.runtime import generate
    from archc.runtime.generate import Sampling, generate_many

    results: dict[str, list[list[int]]] = {}
    fns = {"batched": lambda: results.__setitem__("batched", [r.tokens for r in generate_many(
               model, PROMPTS, new, Sampling(temperature=0))]),
           "single": lambda: results.__setitem__("single", [generate(model, p, new, temperature=0).tokens
                                                            for p in PROMPTS])}
    rate = speed(fns, new * len(PROMPTS), rounds)
    ratio = rate["ratio:single"]
    return common.row(FIGURE, f"{name}: 8 prompts of 3-10 bytes, {new} tokens each, greedy; a = one batched call "
                              "(--prompts), b = 8 single calls (--prompt)", rate["batched"], rate["single"],
                      ratio=ratio, note=f"total tokens/s; every prompt's tokens identical batched and alone: "
                                        f"{results['batched'] == results['single']}")


def gpt2_small_rows() -> list[dict]:
    """GPT-2 small (specs/zoo/gpt2.toml, 124M parameters, its own seeded random weights), 32 bytes after a 4-byte
    prompt: archc's cache vs its recompute and vs transformers' GPT2LMHeadModel of GPT-2 small's config (random
    weights too: speed does not depend on them). archc samples bytes (the first 256 logits), transformers all
    50,257 ids, so the tokens differ; only the speed is compared."""
    name = "GPT-2 small (specs/zoo/gpt2.toml, random weights: 124M parameters, 50,257 vocab): 32 tokens, greedy"
    try:
        import torch
        import transformers
    except ImportError:
        return [common.skipped(FIGURE, name, "transformers is not installed")]
    from archc.runtime import Model, generate

    model = Model.open(cached_build("zoo_gpt2", common.SPECS_DIR / "zoo" / "gpt2.toml").path, device="cpu")
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(activation_function="gelu_new",
                                                               attn_implementation="eager")).eval()
    new = 32
    fns = {"cache": lambda: generate(model, PROMPT, new, temperature=0),
           "recompute": lambda: generate(model, PROMPT, new, temperature=0, cache=False),
           "hf": lambda: hf_generate(ref, PROMPT.encode(), new)}
    read = weight_read(124_000_000)
    fns["read"] = lambda: [read() for _ in range(new)]
    rate = speed(fns, new, 3)
    return [common.row(FIGURE, f"{name}; b = recompute (--no-cache)", rate["cache"], rate["recompute"],
                       ratio=rate["ratio:recompute"], note="tokens/s, medians of 3 interleaved rounds"),
            common.row(FIGURE, f"{name}; b = transformers generate(use_cache=True)", rate["cache"], rate["hf"],
                       goal=">= 2x", met=common.at_least(rate["ratio:hf"], GPT2_GOAL), ratio=rate["ratio:hf"],
                       note=f"speed only: archc picks among bytes, transformers among all ids (both compute all "
                            f"50,257 logits); torch {torch.get_num_threads()} threads, transformers "
                            f"{transformers.__version__}"),
            common.row(FIGURE, f"{name}; b = a bare read of 124M float32 weights per token (one numpy "
                               "matrix-vector product over 496 MB)", rate["cache"], rate["read"],
                       ratio=rate["ratio:read"], note="the memory-bound rate a batch-1 fp32 step works at (see "
                                                      "below); interleaved with the rows above"),
            batched_row(model, "GPT-2 small size", 16, 2)]


MISSES = """**Why GPT-2 small misses 2x transformers (batch 1, CPU):** a decode step of a 124M-parameter fp32 model
reads all 496 MB of its weights once (the 12 blocks' matmuls and the 38.6M-parameter output projection); the
compute is ~0.25 GFLOP, so the step is memory-bound on both sides. The "bare read" row times one matrix-vector
product over that many float32 values per token, interleaved with the others: archc's tokens/s is near it (0.88x
of it on 2026-12-05) (ONNX Runtime's profile of a decode step: 48 MatMul and 1 Gemm, the output head, take ~85% of it; the rest
is reshapes, adds and the KV concat), and transformers' is near it too, so no fp32 batch-1 runtime can be 2x
faster than the other here; which side is ahead moves with the machine's load and thread count (0.89-1.52x
over four runs on a shared 2-core machine). Measured and not worth
keeping: binding the KV cache as OrtValues between steps (IOBinding, no numpy round trip): 24.0-25.1 vs 22.5-25.2
tokens/s (the copies are 4 MB a step against 496 MB of weights); 1 vs 2 intra-op threads: 40 vs 43 ms a step.
What does raise tokens/s: batching (the weights are read once for every row: 8 prompts run ~4x the tokens/s of 8
single calls here) and fewer weight bytes (int8/fp16 weights, as `archc quantize` writes for other models), which change the numbers.
The 5x row at gpt_stdlib's size (4 layers, 128 wide) is the opposite regime: per-op overhead, where archc's single
ONNX Runtime call per step wins 4-6x depending on the load."""


def run(quick: bool = False) -> tuple[list[dict], str]:
    start = time.perf_counter()
    rows = archc_rows(quick) + [transformers_row(quick)]
    lm = QUICK_LM if quick else LM
    if common.spec_path(lm) is not None:
        from archc.runtime import Model

        model = Model.open(cached_build(lm, common.spec_path(lm)).path, device="cpu")
        rows.append(batched_row(model, lm, 12 if quick else 64, 2 if quick else 5))
    rows += [] if quick else gpt2_small_rows()
    details = ("archc side: archc.runtime.generate with model.kv.onnx (ONNX Runtime CPU, archc's own session "
               "options); ratio = the median over interleaved rounds of b's time / a's time. The KV-cache file is one graph: prefill (past length 0) and one-token "
               f"decode steps. Figure took {time.perf_counter() - start:.0f} s.")
    return rows, details
