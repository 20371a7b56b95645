"""Figure 3: ONNX Runtime vs torch eager, per example spec: latency at batch 1 (goal ORT / torch <= 0.5) and
throughput at batch 64 (informational). Whole-graph specs (GCNs) have no batch axis: one row at the spec's
typical graph size, held to the batch-1 goal. Also: the language model at 8- and 32-token windows, the karate GCN at
2,000 nodes / 10,000 edges, and byte generation speed (`archc infer --prompt`).

Both sides run the same weights: torch is the lowered module in eval mode under inference_mode, ORT a bare
CPU session on the exported file, with default options ('default'), and the tuned options this harness found
cheap ('tuned': see TUNED), each interleaved against torch in its own pair of rounds.
"""
from __future__ import annotations

import numpy as np
import torch

import common

FIGURE = 3
KEY = "ort_vs_torch"
TITLE = "ONNX Runtime vs torch eager (CPU)"
A, B = "ONNX Runtime (ms/batch)", "torch eager (ms/batch)"
GOAL = 0.5
LM, LM_WINDOWS = "gpt_stdlib", (8, 32)                # the language model also at short windows
QUICK_LM = "transformer_block_demo"                   # --quick: a smaller language model, one of QUICK_SPECS
GRAPH, GRAPH_NODES, GRAPH_EDGES = "gcn_karate", 2000, 10_000  # a GCN on a graph larger than karate's 34 nodes


def tuned_session(path, batch: int):
    """The cheap session options: one intra-op thread for batch-1 latency (no thread-pool hand-off for tiny
    kernels), spinning off (an idle pool must not steal the other core on a 2-core machine)."""
    return common.ort_session(path, threads=1 if batch == 1 else None, spinning=False)


def session_options(rounds: int, round_s: float) -> list[dict]:
    """Before/after of the cheap session options at batch 1: ORT's library defaults (its own thread count,
    spinning pool) vs TUNED, both ORT, interleaved."""
    out = []
    for name in ("digits_mlp", "residual_cnn", "transformer_block_demo", "gcn_karate"):
        path = common.spec_path(name)
        if path is None:
            continue
        built = common.build(name, path)
        feeds, names = common.feeds_for(built, 1), list(built.compiled.graph.outputs)
        default = common.ort_session(built.path, threads=0)  # 0: onnxruntime picks (one per physical core)
        tuned = tuned_session(built.path, 1)
        fns = {"tuned": lambda: tuned.run(names, feeds), "default": lambda: default.run(names, feeds)}
        inner = common.inner_for(fns["default"], round_s, cap=2000)
        t = common.interleave(fns, rounds, inner=inner)
        out.append(common.row(FIGURE, f"session options, {name} batch 1: tuned vs ORT defaults",
                              common.median(t["tuned"]) * 1e3, common.median(t["default"]) * 1e3, unit="ms",
                              ratio=common.paired_ratio(t["tuned"], t["default"]),
                              note="optimization before/after: a = tuned (1 thread, no spinning), b = defaults"))
    return out


def pair(ort_run, torch_run, rounds: int, round_s: float) -> tuple[float, float, float, int]:
    """(ORT ms, torch ms, paired ratio, calls per round)."""
    inner = common.inner_for(torch_run, round_s, cap=2000)
    t = common.interleave({"ort": ort_run, "torch": torch_run}, rounds, inner=inner)
    return (common.median(t["ort"]) * 1e3, common.median(t["torch"]) * 1e3, common.paired_ratio(t["ort"], t["torch"]),
            inner)


def compare(label: str, built, batch: int | None, rounds: int, round_s: float, sizes: dict | None = None,
            flops: float | None = None) -> dict:
    """One row: ORT (default session, and the tuned one in the note) vs torch eager on the same weights and feeds.
    batch None: a whole-graph model (no batch axis), held to the batch-1 goal; sizes: symbolic axes other than the
    spec's [axes], whose FLOPs (per example) are then given."""
    module, names = built.module, list(built.compiled.graph.outputs)
    feeds = common.feeds_for(built, batch or 1, sizes=sizes)
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    default = common.ort_session(built.path)
    tuned = tuned_session(built.path, batch or 1) if common.THREADS != 1 else default

    def torch_run() -> None:
        with torch.inference_mode():
            module(*args)
    with torch.inference_mode():
        ref = module(*args)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    for r, o in zip(ref, default.run(names, feeds)):
        assert np.allclose(r.detach().numpy(), o, atol=1e-3, rtol=1e-3), label
    o_ms, t_ms, ratio, inner = pair(lambda: default.run(names, feeds), torch_run, rounds, round_s)
    if common.THREADS == 1:  # one thread: no pool, nothing spins; tuned == default
        tuned_note = "tuned ORT = default at 1 thread"
    else:
        tu_ms, _, tu_ratio, _ = pair(lambda: tuned.run(names, feeds), torch_run, rounds, round_s)
        tuned_note = f"tuned ORT {tu_ms:.3f} ms = {tu_ratio:.2f}x torch"
    flops = (built.compiled.graph.total_flops if flops is None else flops) * (batch or 1)
    floor = flops / common.peak_gflops() / 1e6  # ms
    floor_note = f"; FLOP floor {floor:.3f} ms" if floor > 0.05 * o_ms else ""
    per_s = f"; {1e3 * batch / o_ms:,.0f} vs {1e3 * batch / t_ms:,.0f} samples/s" if batch else ""
    scored = batch in (1, None)
    return common.row(FIGURE, label, o_ms, t_ms, goal=f"<= {GOAL}" if scored else "", ratio=ratio,
                      met=common.at_most(ratio, GOAL) if scored else None, unit="ms",
                      note=f"{tuned_note}{per_s}{floor_note}; {rounds} rounds x {inner}")


def example_rows(rounds: int, round_s: float, quick: bool) -> list[dict]:
    """Every example spec at batch 1 (the goal) and 64, or as one graph."""
    rows: list[dict] = []
    for name, built in common.built_specs(FIGURE, quick, rows):
        for batch in (1, 64) if common.batched(built) else (None,):
            label = f"{name} batch {batch}" if batch else f"{name} (one graph)"
            rows.append(compare(label, built, batch, rounds, round_s))
    return rows


def lm_window_rows(lm: str, rounds: int, round_s: float) -> list[dict]:
    """The language model at short windows too (a prompt's first tokens), besides its full context."""
    path = common.spec_path(lm)
    if path is None:
        return [common.skipped(FIGURE, f"{lm} short windows", "spec not in specs/ yet")]
    from archc.language.load import load_file
    from archc.pipeline import compile_spec

    built = common.build(lm, path)
    rows = []
    for seq in LM_WINDOWS:
        raw = load_file(path)
        raw["axes"] = {**raw.get("axes", {}), "seq": seq}  # archc's FLOP count at this window (attention is T^2)
        flops = compile_spec(raw).graph.total_flops
        rows.append(compare(f"{lm} batch 1, {seq}-token window", built, 1, rounds, round_s, sizes={"seq": seq},
                            flops=flops))
    return rows


def large_graph_row(rounds: int, round_s: float, quick: bool) -> dict:
    """The karate GCN traced and run at GRAPH_NODES nodes and GRAPH_EDGES random edges (one graph; a tenth when
    quick)."""
    nodes, edges = (GRAPH_NODES // 10, GRAPH_EDGES // 10) if quick else (GRAPH_NODES, GRAPH_EDGES)
    path = common.spec_path(GRAPH)
    if path is None:
        return common.skipped(FIGURE, f"{GRAPH} at {nodes:,} nodes", "spec not in specs/ yet")
    from archc.language.load import load_file

    raw = load_file(path)
    raw["axes"] = {"nodes": nodes, "edges": edges}  # trace and check the export at this size
    built = common.build(f"{GRAPH}_{nodes}", raw)
    return compare(f"{GRAPH} at {nodes:,} nodes, {edges:,} edges (one graph)", built, None, rounds, round_s)


def generation_row(lm: str, quick: bool) -> dict:
    """Byte generation with archc.runtime.generate (`archc infer --prompt`): the window is recomputed per token."""
    path = common.spec_path(lm)
    if path is None:
        return common.skipped(FIGURE, f"{lm} generation", "spec not in specs/ yet")
    from archc.runtime import Model, generate

    model = Model.open(common.build(lm, path).path, device="cpu")
    tokens = 16 if quick else 200
    g = generate(model, "def ", max_new_tokens=tokens, temperature=1.0, seed=0)
    return common.row(FIGURE, f"{lm} generation, {tokens} bytes after a 4-byte prompt (archc.runtime.generate)",
                      1e3 / g.tokens_per_second, None, unit="ms", ratio=None,
                      note=f"a = ms per generated byte ({g.tokens_per_second:.1f} tokens/s), archc's own session; "
                           "no KV cache: every byte reruns the model over the last `context` bytes")


def run(quick: bool = False) -> tuple[list[dict], str]:
    rounds, round_s = (3, 0.01) if quick else (15, 0.06)
    lm = QUICK_LM if quick else LM
    rows = example_rows(rounds, round_s, quick)
    rows += lm_window_rows(lm, rounds, round_s)
    rows.append(large_graph_row(rounds, round_s, quick))
    rows.append(generation_row(lm, quick))
    rows += session_options(rounds, round_s)
    details = (f"FLOP floor = archc's FLOP count / this machine's fp32 matmul rate ({common.peak_gflops():.0f} "
               f"GFLOP/s at {common.THREADS or 'default'} thread(s), torch.mm 1024^3): no runtime can beat it, so a "
               "model whose torch time is under twice its floor cannot reach the 0.5 goal in fp32. "
               f"torch {torch.__version__} eager, {torch.get_num_threads()} threads, inference_mode; ONNX Runtime "
               "CPU provider. 'tuned ORT' = " + " ".join(tuned_session.__doc__.split(":", 1)[1].split()))
    return rows, details


MISSES = """**Why a batch-1 row misses (gpt_stdlib):** the 0.5 goal assumes torch's per-op Python overhead dominates at batch
1, which ONNX Runtime removes. That holds for every small model here (0.08-0.41), but one gpt_stdlib example is a
128-token context through 4 blocks of width 128: ~0.25 GFLOP, compute-bound in both runtimes. The note's FLOP
floor (the model's FLOPs at this machine's fp32 matmul rate) is about half of torch's time, so 0.5 would need ORT
to run at or under the floor. **What would close it:** fewer FLOPs per call, not a faster runtime: for generation
(`archc infer --prompt`), a KV cache (feed one new token per step with the cached keys/values as extra model
inputs/outputs) turns each step from 128 positions into 1, ~100x less work; int8 weights (ORT dynamic quantization
of the MatMuls) would roughly halve the GEMM time but changes the numbers (onnxruntime 1.31's `quantize_dynamic`
fails shape inference on this export, so it was not measured). The batch-64 rows have no goal; the transformers
there are GEMM-bound and ORT ≈ torch."""
