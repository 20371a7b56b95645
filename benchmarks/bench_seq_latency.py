"""Ratio benchmark: ONNX Runtime vs torch eager latency at batch 1 for the three sequence specs.

Run: python benchmarks/bench_seq_latency.py [--repeats N] [--out out/bench_seq_latency.json]. Each spec goes
through the real path (archc.compile -> archc.export.export, ONNX opened with archc.runtime.Model, i.e. archc's
own session options); torch runs the same module under inference_mode. Calls are interleaved (torch, ORT,
torch, ...) so drift in machine load hits both alike, in 5 rounds of which the quietest is kept; the table
shows medians and ORT/torch (below 1: ONNX Runtime is faster), with archc's session (default thread pools)
and with one thread each, next to the issue's reference ratios measured on hand-written equivalents. It also times
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
ROUNDS = 5
SEQ_LENGTHS = (8, 32)  # the language model also at short windows (a prompt's first tokens), besides its context
DEFAULT_THREADS = torch.get_num_threads()


def feeds_for(graph, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Batch-1 inputs: images in [0, 1], or byte tokens (symbolic axes at `sizes`, else the spec's [axes])."""
    rng = np.random.default_rng(0)
    out = {}
    for name, t in graph.inputs.items():
        shape = [1] + [d if isinstance(d, int) else sizes.get(d, graph.sizes[d]) for d in t.features]
        out[name] = (rng.integers(0, 256, shape).astype(np.int64) if t.dtype == "int64"
                     else rng.random(shape, dtype=np.float32))
    return out


def interleaved_ms(torch_fn, ort_fn, repeats: int, rounds: int = ROUNDS) -> tuple[float, float]:
    """Median milliseconds of each, measured alternately after a warm-up, in the quietest of `rounds` rounds.

    Both sides of a round saw the same machine; taking the round with the lowest sum of medians keeps a burst
    of load from other processes (this machine is shared) out of the ratio without unpairing the sides.
    """
    for _ in range(WARMUP):
        torch_fn()
        ort_fn()
    best: tuple[float, float] | None = None
    for _ in range(rounds):
        t_torch, t_ort = [], []
        for _ in range(max(1, repeats // rounds)):
            for fn, acc in ((torch_fn, t_torch), (ort_fn, t_ort)):
                start = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - start)
        pair = (1e3 * statistics.median(t_torch), 1e3 * statistics.median(t_ort))
        if best is None or sum(pair) < sum(best):
            best = pair
    assert best is not None
    return best


def session(path: Path, threads: int | None) -> Model:
    """archc's own session (Model.open) for the default thread pool; the same options with N intra-op threads."""
    if threads is None:
        return Model.open(path, device="cpu")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as archc.runtime.session does
    opts.intra_op_num_threads = threads
    return Model(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), str(path))


def bench(name: str, folder: Path, repeats: int, threads: int | None) -> list[dict]:
    """One row per input size: the spec's own sizes, and for the language model shorter windows too."""
    result = compile_spec(ROOT / "specs" / f"{name}.toml")
    module = archc.compile(ROOT / "specs" / f"{name}.toml").eval()
    path = folder / f"{name}.onnx"
    if not path.exists():
        export(result, path, module=module)
    model = session(path, threads)
    torch.set_num_threads(threads or DEFAULT_THREADS)
    lm = result.spec.task.kind == "language_model"
    sizes = SEQ_LENGTHS + (result.graph.sizes["seq"],) if lm else (None,)
    rows = []
    for seq in sizes:
        graph = result.graph
        feeds = feeds_for(graph, {"seq": seq} if seq else {})
        args = [torch.from_numpy(v) for v in feeds.values()]
        with torch.inference_mode():
            expected = module(*args)
            assert np.allclose(model.run(feeds)[next(iter(model.outputs))], expected.numpy(), atol=1e-3)
            t_torch, t_ort = interleaved_ms(lambda: module(*args), lambda: model.session.run(None, feeds), repeats)
        rows.append({"spec": name, "threads": threads or DEFAULT_THREADS,
                     "input": {k: list(v.shape) for k, v in feeds.items()}, "params": graph.total_params,
                     "torch_ms": t_torch, "ort_ms": t_ort, "ratio": t_ort / t_torch, "reference_ratio": SPECS[name]})
    if lm and threads is None:
        tokens = 200
        g = generate(model, "def ", max_new_tokens=tokens, temperature=1.0, seed=0)
        rows[-1]["generate_tokens_per_s"] = g.tokens_per_second
        rows[-1]["generate_note"] = (f"{tokens} new bytes after a 4-byte prompt (the window grows to the context), "
                                     "recomputing the whole window per token (no KV cache)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_seq_latency.json")
    a = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (None, 1):  # the default pools (archc's own session), then one thread each
            for name in SPECS:
                rows.extend(bench(name, Path(tmp), a.repeats, threads))
    print(f"{'spec':<12} {'threads':>7} {'input':<22} {'torch ms':>9} {'ORT ms':>8} {'ORT/torch':>9} {'reference':>9}")
    for r in rows:
        shape = ", ".join(f"{k} {v}" for k, v in r["input"].items())
        print(f"{r['spec']:<12} {r['threads']:>7} {shape:<22} {r['torch_ms']:>9.3f} {r['ort_ms']:>8.3f} "
              f"{r['ratio']:>8.2f}x {r['reference_ratio']:>8.2f}x")
        if "generate_tokens_per_s" in r:
            print(f"  generate: {r['generate_tokens_per_s']:.1f} tokens/s ({r['generate_note']})")
    env = {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version(),
           "cpus": os.cpu_count(), "torch_threads": DEFAULT_THREADS, "repeats": a.repeats,
           "load_average": os.getloadavg()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    from archc.util import write_text_atomic
    write_text_atomic(a.out, json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    print(f"wrote {a.out} (load average {env['load_average'][0]:.2f} on {env['cpus']} CPUs)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
