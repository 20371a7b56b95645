"""Ratio benchmark: ONNX Runtime vs torch eager latency at batch 1 for the three sequence specs.

Run: python benchmarks/bench_seq_latency.py [--repeats N] [--out out/bench_seq_latency.json]. Each spec goes
through the real path (archc.compile -> archc.export.export, ONNX opened with archc.runtime.Model, i.e. archc's
own session options); torch runs the same module under inference_mode. Calls are interleaved (torch, ORT,
torch, ...) so drift in machine load hits both alike; the table shows medians and ORT/torch (below 1: ONNX
Runtime is faster), next to the issue's reference ratios measured on hand-written equivalents. It also times
byte generation with archc.runtime.generate (recompute per token, no KV cache) on the GPT spec.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import archc
from archc.export import export
from archc.pipeline import compile_spec
from archc.runtime import Model, generate

ROOT = Path(__file__).resolve().parents[1]
SPECS = {"lstm_digits": 0.42, "vit_digits": 0.43, "gpt_stdlib": 0.49}  # the reference ORT/torch ratios
WARMUP = 20


def feeds_for(graph) -> dict[str, np.ndarray]:
    """Batch-1 inputs: images in [0, 1], or a full context of byte tokens."""
    rng = np.random.default_rng(0)
    out = {}
    for name, t in graph.inputs.items():
        shape = [1] + [d if isinstance(d, int) else graph.sizes[d] for d in t.features]
        out[name] = (rng.integers(0, 256, shape).astype(np.int64) if t.dtype == "int64"
                     else rng.random(shape, dtype=np.float32))
    return out


def interleaved_ms(torch_fn, ort_fn, repeats: int) -> tuple[float, float]:
    """Median milliseconds of each, measured alternately after a warm-up."""
    for _ in range(WARMUP):
        torch_fn()
        ort_fn()
    t_torch, t_ort = [], []
    for _ in range(repeats):
        for fn, acc in ((torch_fn, t_torch), (ort_fn, t_ort)):
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    return 1e3 * statistics.median(t_torch), 1e3 * statistics.median(t_ort)


def bench(name: str, folder: Path, repeats: int) -> dict:
    result = compile_spec(ROOT / "specs" / f"{name}.toml")
    module = archc.compile(ROOT / "specs" / f"{name}.toml").eval()
    path = folder / f"{name}.onnx"
    export(module, result.graph, result.spec, result.raw, result.sha256, path)
    model = Model.open(path, device="cpu")
    feeds = feeds_for(result.graph)
    args = [torch.from_numpy(v) for v in feeds.values()]
    with torch.inference_mode():
        expected = module(*args)
        assert np.allclose(model.run(feeds)[next(iter(model.outputs))], expected.numpy(), atol=1e-3)
        t_torch, t_ort = interleaved_ms(lambda: module(*args), lambda: model.session.run(None, feeds), repeats)
    shape = {k: list(v.shape) for k, v in feeds.items()}
    row = {"spec": name, "input": shape, "params": result.graph.total_params, "torch_ms": t_torch, "ort_ms": t_ort,
           "ratio": t_ort / t_torch, "reference_ratio": SPECS[name]}
    if result.spec.task.kind == "language_model":
        tokens = 64
        g = generate(model, "def ", max_new_tokens=tokens, temperature=1.0, seed=0)
        row["generate_tokens_per_s"] = g.tokens_per_second
        row["generate_note"] = (f"{tokens} new bytes after a 4-byte prompt, recompute over the whole window per "
                                "token (no KV cache)")
        row["full_window_tokens_per_s"] = 1e3 / t_ort  # one token per forward at the full context
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_seq_latency.json")
    a = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in SPECS:
            rows.append(bench(name, Path(tmp), a.repeats))
    print(f"{'spec':<12} {'input':<22} {'params':>9} {'torch ms':>9} {'ORT ms':>8} {'ORT/torch':>9} {'reference':>9}")
    for r in rows:
        shape = ", ".join(f"{k} {v}" for k, v in r["input"].items())
        print(f"{r['spec']:<12} {shape:<22} {r['params']:>9,} {r['torch_ms']:>9.3f} {r['ort_ms']:>8.3f} "
              f"{r['ratio']:>8.2f}x {r['reference_ratio']:>8.2f}x")
        if "generate_tokens_per_s" in r:
            print(f"  generate: {r['generate_tokens_per_s']:.1f} tokens/s ({r['generate_note']}); "
                  f"{r['full_window_tokens_per_s']:.1f} tokens/s at the full window")
    env = {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version(),
           "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "repeats": a.repeats,
           "load_average": os.getloadavg()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    from archc.util import write_text_atomic
    write_text_atomic(a.out, json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    print(f"wrote {a.out} (load average {env['load_average'][0]:.2f} on {env['cpus']} CPUs)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
