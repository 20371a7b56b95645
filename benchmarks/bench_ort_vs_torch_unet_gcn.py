"""Ratio benchmark: ONNX Runtime vs torch eager for the U-Net DDPM denoiser at batch 1 and the karate GCN at
2,000 nodes / 10,000 edges, both built from their example specs through compile -> lower -> export.

Run: python benchmarks/bench_ort_vs_torch_unet_gcn.py [--repeats 300]. Calls alternate (torch, ORT, torch, ...)
so both see the same machine load; the medians and their ratio ort/torch (< 1: ORT faster) go to
out/bench_ort_vs_torch_unet_gcn.json, with one thread each and with the default thread pools.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from archc.export import export
from archc.lower import lower
from archc.pipeline import compile_spec
from archc.language.load import load_file as load_spec

ROOT = Path(__file__).resolve().parents[1]
NODES, EDGES = 2000, 10_000


def build(raw: dict, name: str, workdir: Path):
    """(torch module, ONNX path) for a spec dict."""
    compiled = compile_spec(raw, name=name)
    module = lower(compiled.graph, seed=0).eval()
    path = workdir / f"{compiled.graph.name}.onnx"
    export(compiled, path, module=module)
    return module, path


def interleaved(torch_fn, ort_fn, repeats: int, warmup: int = 20) -> tuple[float, float]:
    """Median milliseconds of each, measured alternately."""
    for _ in range(warmup):
        torch_fn()
        ort_fn()
    a, b = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch_fn()
        t1 = time.perf_counter()
        ort_fn()
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return 1e3 * statistics.median(a), 1e3 * statistics.median(b)


def case(name: str, module, path: Path, feeds: dict[str, np.ndarray], repeats: int) -> list[dict]:
    args = [torch.from_numpy(v) for v in feeds.values()]
    rows = []
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            ref = module(*args)
            diff = float(np.max(np.abs(sess.run(None, feeds)[0] - ref.numpy())))
            t_torch, t_ort = interleaved(lambda: module(*args), lambda: sess.run(None, feeds), repeats)
        rows.append({"case": name, "threads": threads, "torch_ms": round(t_torch, 4), "ort_ms": round(t_ort, 4),
                     "ratio_ort_over_torch": round(t_ort / t_torch, 3), "max_abs_diff": diff})
        print(f"{name:<28} threads {threads}: torch {t_torch:.3f} ms, ORT {t_ort:.3f} ms, "
              f"ratio {t_ort / t_torch:.2f}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=300)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    rows = []

    unet, unet_path = build(load_spec(ROOT / "specs/unet_ddpm_digits.toml"), "unet", work)
    feeds = {"x": rng.standard_normal((1, 1, 8, 8)).astype(np.float32), "t": np.array([[500.0]], np.float32)}
    rows += case("unet_ddpm_digits batch 1", unet, unet_path, feeds, a.repeats)

    raw = load_spec(ROOT / "specs/gcn_karate.toml")
    raw["axes"] = {"nodes": NODES, "edges": EDGES}            # trace at the benchmark's size
    gcn, gcn_path = build(raw, "gcn", work)
    feeds = {"x": rng.standard_normal((NODES, 34)).astype(np.float32),
             "edge_index": rng.integers(0, NODES, (2, EDGES)).astype(np.int64)}
    rows += case(f"gcn_karate {NODES} nodes", gcn, gcn_path, feeds, a.repeats)

    out = ROOT / "out" / "bench_ort_vs_torch_unet_gcn.json"
    out.parent.mkdir(exist_ok=True)
    meta = {"torch": torch.__version__, "onnxruntime": ort.__version__, "cpus": os.cpu_count(),
            "repeats": a.repeats, "edges": EDGES, "nodes": NODES}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
