"""Figure 7: against the hardware. ONNX Runtime's achieved GFLOP/s on the MLP (digit_classifier, 784-256-128-10)
and the residual CNN at batch 256, vs this machine's fp32 matrix-multiply peak measured in the same run and
interleaved with them. Goal: >= 0.5 of peak.

FLOPs are archc's own count (`archc validate`: 2 per multiply-add, per example) x 256. The peak is the best of a
square fp32 product through torch (MKL/oneDNN) and through ONNX Runtime's own MatMul (MLAS), so neither library's
weakness lowers the bar.
"""
from __future__ import annotations

import numpy as np

import common

FIGURE = 7
KEY = "peak"
TITLE = "ONNX Runtime vs this machine's fp32 matmul peak (batch 256)"
A, B = "ORT achieved (GFLOP/s)", "fp32 matmul peak (GFLOP/s)"
GOAL = 0.5
BATCH = 256
MODELS = (("digit_classifier", "MLP"), ("residual_cnn", "CNN"))


def matmul_model(n: int, path) -> None:
    """An ONNX file computing X @ W for X [n, n] and a constant W [n, n]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "mm",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # readable by any onnxruntime that reads opset 18
    onnx.save(model, str(path))


def run(quick: bool = False) -> tuple[list[dict], str]:
    import torch

    n = 512 if quick else 1024
    rounds = 2 if quick else 9
    flop_mm = 2 * n ** 3
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm_path = common.workdir() / f"matmul{n}.onnx"
    matmul_model(n, mm_path)
    mm_sess = common.ort_session(mm_path)
    x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    fns = {"torch mm": lambda: torch.mm(a, b), "ort MatMul": lambda: mm_sess.run(None, {"X": x})}
    flops = {"torch mm": flop_mm, "ort MatMul": flop_mm}
    skipped = []
    for name, label in MODELS:
        path = common.spec_path(name)
        if path is None:
            skipped.append(common.skipped(FIGURE, f"{label} ({name})", "spec not in specs/"))
            continue
        built = common.build(name, path)
        sess, feeds = common.ort_session(built.path), common.feeds_for(built, BATCH)
        fns[label] = lambda s=sess, f=feeds: s.run(None, f)
        flops[label] = built.compiled.graph.total_flops * BATCH
    inner = {k: common.inner_for(f, 0.05 if quick else 0.15, cap=200) for k, f in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):  # interleaved: every side once per round, order reversed every other round
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            times[k] += common.interleave({k: fns[k]}, 1, inner=inner[k], warmup=0)[k]
    gflops = {k: flops[k] / common.median(v) / 1e9 for k, v in times.items()}
    peak_key = max(("torch mm", "ort MatMul"), key=lambda k: gflops[k])
    peak = gflops[peak_key]
    rows = [common.row(FIGURE, f"{label} ({name}) batch {BATCH}", gflops[label], peak, goal=f">= {GOAL}",
                       met=common.at_least(gflops[label] / peak, GOAL), unit="GFLOP/s",
                       note=f"{flops[label] / BATCH / 1e6:.2f} MFLOP/example; "
                            f"{common.median(times[label]) * 1e3:.2f} ms/batch")
            for name, label in MODELS if label in fns]
    rows.append(common.row(FIGURE, f"peak: {n}x{n} fp32 matmul", peak, None, unit="GFLOP/s",
                           note=f"best of torch mm {gflops['torch mm']:.1f} and ORT MatMul "
                                f"{gflops['ort MatMul']:.1f} GFLOP/s ({peak_key}); {torch.get_num_threads()} threads"))
    details = (f"Peak = the faster of torch.mm and an ONNX Runtime MatMul model on {n}x{n} fp32, timed in the same "
               f"rounds as the models ({rounds} rounds).")
    return rows + skipped, details


MISSES = """**Why a model would miss:** achieved GFLOP/s at batch 256 is bounded by the model's shapes, not by
ONNX Runtime's kernels: the MLP is three GEMMs whose last one ([256, 128] x [128, 10]) is memory-bound, and the
CNN's 16/32-channel 3x3 convolutions are im2col plus a skinny GEMM (K = 144/288, N = 16/32). **What would close
it:** larger batches or wider layers. A ratio above 1 means the model's GEMMs ran as fast as or faster than the
square 1024^3 product measured as the peak (its operands fit in cache), within this run's noise."""
