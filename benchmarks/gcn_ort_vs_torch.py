"""Ratio benchmark: gcn_conv in ONNX Runtime vs torch at 2,000 nodes and 10,000 edges.

Run: python benchmarks/gcn_ort_vs_torch.py. Builds the op through the real compile -> lower -> export path
and prints median latencies and their ratio, with one thread each and with the default thread pools.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from archc.export import export
from archc.lower import lower
from archc.pipeline import compile_spec

NODES, EDGES, FEATURES = 2000, 10_000, 16


def spec(out_features: int) -> dict:
    return {"archc": 1, "model": {"name": "gcn-bench"}, "task": {"kind": "regression"},
            "inputs": {"x": {"shape": ["nodes", FEATURES], "batched": False},
                       "edge_index": {"shape": [2, "edges"], "dtype": "int64", "vocab": "nodes", "batched": False}},
            "axes": {"nodes": NODES, "edges": EDGES},
            "layers": [{"op": "gcn_conv", "from": ["x", "edge_index"], "out_features": out_features}]}


def median_ms(fn, repeats: int = 200) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    result = compile_spec(spec(16))
    module = lower(result.graph).eval()
    path = Path(tempfile.mkdtemp()) / "gcn.onnx"
    report = export(result, path, module=module)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((NODES, FEATURES)).astype(np.float32),
             "edge_index": rng.integers(0, NODES, (2, EDGES)).astype(np.int64)}
    args = [torch.from_numpy(v) for v in feeds.values()]
    default_threads = torch.get_num_threads()
    print(f"gcn_conv {FEATURES}->16, {NODES} nodes, {EDGES} edges; parity max abs diff {report.max_abs_diff:.1e}")
    for threads in (1, default_threads):
        torch.set_num_threads(threads)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        assert np.allclose(sess.run(None, feeds)[0], module(*args).detach().numpy(), atol=1e-4)
        with torch.no_grad():
            t_torch = median_ms(lambda: module(*args))
        t_ort = median_ms(lambda: sess.run(None, feeds))
        print(f"threads {threads:2d}: torch {t_torch:.3f} ms, ONNX Runtime {t_ort:.3f} ms, ratio ort/torch "
              f"{t_ort / t_torch:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
