"""Shared pieces of the benchmark harness: rows, interleaved timing, the example specs, cached ONNX builds.

Every comparison runs its two sides in one process, interleaved (A B, then B A, ...), so drift in the machine's
load hits both alike; figures are medians of per-round means and the ratio of the medians.
"""
from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
SPECS_DIR = ROOT / "specs"
RESULTS_DIR = Path(__file__).resolve().parent / "results"  # RESULTS.md, results.json, gpu_results.json

# The example specs the issue names (some land later: a missing one is reported, not an error), then any other
# spec found in specs/ (sorted), so a new example spec is benchmarked without editing this list.
NAMED_SPECS = ("digits_mlp", "digit_classifier", "residual_cnn", "two_branch", "lstm_digits", "transformer_block_demo",
               "vit_digits", "gpt_stdlib", "unet_ddpm_digits", "gcn_karate", "graph_classifier")


def spec_path(name: str) -> Path | None:
    """specs/NAME.toml or specs/NAME.json, or None when the spec is not there (yet)."""
    for ext in (".toml", ".json"):
        p = SPECS_DIR / f"{name}{ext}"
        if p.exists():
            return p
    return None


# --quick walks these alone: one batched model, one language model (a symbolic axis), one whole-graph model, so
# every code path of a figure runs, in seconds.
QUICK_SPECS = ("digits_mlp", "transformer_block_demo", "gcn_karate")


def example_specs(quick: bool = False) -> list[tuple[str, Path | None]]:
    """(name, path or None) for the named specs, then every other spec in specs/ (QUICK_SPECS when quick)."""
    if quick:
        return [(n, spec_path(n)) for n in QUICK_SPECS]
    found = {p.stem: p for p in sorted(SPECS_DIR.glob("*.toml")) + sorted(SPECS_DIR.glob("*.json"))}
    out = [(n, found.get(n)) for n in NAMED_SPECS]
    out += [(n, p) for n, p in sorted(found.items()) if n not in NAMED_SPECS]
    return out


# ---- rows ------------------------------------------------------------------------------------------
AUTO = object()


def row(figure: int, name: str, a: float | None, b: float | None, goal: str = "", met: bool | None = None,
        note: str = "", unit: str = "", ratio: Any = AUTO) -> dict[str, Any]:
    """One result row. ratio defaults to a / b (None: no ratio); met is None where the row has no goal."""
    if ratio is AUTO:
        ratio = a / b if a is not None and b not in (None, 0) else None
    return {"figure": figure, "name": name, "a": _num(a), "b": _num(b), "ratio": _num(ratio), "goal": goal,
            "met": met, "note": note, "unit": unit}


def skipped(figure: int, name: str, why: str) -> dict[str, Any]:
    """A row for something that could not be measured (a missing spec, no GPU, ...)."""
    return row(figure, name, None, None, goal="", met=None, note=f"skipped: {why}")


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else bool(value <= limit)


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else bool(value >= limit)


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- timing ----------------------------------------------------------------------------------------
def interleave(fns: dict[str, Callable[[], Any]], rounds: int, inner: int = 1, warmup: int = 1,
               setup: Callable[[], Any] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each fn, one value per round (the mean of `inner` calls); the order alternates
    every round (A B, B A, ...). `warmup` rounds run first and are dropped; `setup` runs, untimed, before each
    timed block (e.g. gc.collect, so no side pays for the garbage another left)."""
    keys = list(fns)
    for _ in range(warmup):
        for k in keys:
            for _ in range(inner):
                fns[k]()
    times: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            fn = fns[k]
            if setup is not None:
                setup()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[k].append((time.perf_counter() - start) / inner)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a_i / b_i: each round's two sides ran back to back, so slow drift in the machine's
    load cancels within a pair (sturdier than the ratio of the two medians when the load moves)."""
    return statistics.median(x / y for x, y in zip(a, b))


def spread(xs: list[float]) -> str:
    """Interquartile range relative to the median, as a short note (how noisy the side was)."""
    if len(xs) < 4:
        return ""
    q = statistics.quantiles(xs, n=4)
    m = statistics.median(xs)
    return f"IQR ±{50 * (q[2] - q[0]) / m:.0f}%" if m else ""


def inner_for(fn: Callable[[], Any], target_s: float, cap: int = 1000) -> int:
    """How many calls of fn make one timed round of about target_s (one probe call, after a warm-up)."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, min(cap, int(target_s / once)))


# ---- building ONNX models --------------------------------------------------------------------------
@dataclass
class Built:
    name: str
    path: Path
    compiled: Any          # archc.pipeline.Compiled
    module: Any            # the torch module (eval mode)
    export_seconds: float  # the export() call, parity check included
    report: Any            # archc.export.onnx.ExportReport


_BUILT: dict[str, Built] = {}
_WORKDIR: Path | None = None


def workdir() -> Path:
    """One temporary folder per process for exported models and sample files."""
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = Path(tempfile.mkdtemp(prefix="archc-bench-"))
    return _WORKDIR


def built_specs(figure: int, quick: bool, rows: list[dict[str, Any]]) -> Iterator[tuple[str, Built]]:
    """(name, Built) for every example spec (common.example_specs) that builds; a missing spec or one that fails to
    build or export adds a skipped row to `rows` instead."""
    for name, path in example_specs(quick):
        if path is None:
            rows.append(skipped(figure, name, "spec not in specs/ yet"))
            continue
        try:
            built = build(name, path)
        except Exception as e:  # a spec that does not build (yet) is reported, not fatal
            rows.append(skipped(figure, name, f"does not build/export: {type(e).__name__}: "
                                              f"{str(e).splitlines()[0][:160]}"))
            continue
        yield name, built


def build(name: str, path: Path | dict[str, Any], exporter: str = "emit") -> Built:
    """Compile, lower (seed 0) and export a spec (a file, or a spec dict) once per process under `name`; later
    calls reuse the file."""
    key = f"{name}:{exporter}"
    if key not in _BUILT:
        from archc.export import export
        from archc.lower import lower
        from archc.pipeline import compile_spec

        compiled = compile_spec(path)
        module = lower(compiled.graph, seed=0).eval()
        out = workdir() / f"{name}.{exporter}.onnx"
        start = time.perf_counter()
        report = export(compiled, out, module=module, exporter=exporter)
        _BUILT[key] = Built(name, out, compiled, module, time.perf_counter() - start, report)
    return _BUILT[key]


def feeds_for(built: Built, batch: int, seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Random inputs of the model's types at this batch size (symbolic axes at their typical sizes, or `sizes`)."""
    from archc.export.onnx import example_inputs

    graph = built.compiled.graph
    return example_inputs(graph, batch, {**graph.sizes, **(sizes or {})}, seed=seed)


def batched(built: Built) -> bool:
    """False for whole-graph models (no batch axis: GCNs over one graph)."""
    return any(t.batched for t in built.compiled.graph.inputs.values())


# Threads for torch and ONNX Runtime sessions made here; None keeps each library's default. run.py sets it.
THREADS: int | None = None


def set_threads(n: int | None) -> None:
    global THREADS
    THREADS = n
    if n is not None:
        import torch
        torch.set_num_threads(n)


def ort_session(path: Path, threads: int | None = None, spinning: bool | None = None, opt_all: bool = True):
    """A bare onnxruntime CPU session: default options, but intra-op threads = THREADS when that is set."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    threads = threads if threads is not None else THREADS
    if threads:  # 0 or None: onnxruntime's own default
        opts.intra_op_num_threads = threads
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if not opt_all:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def cpu_count() -> int:
    return os.cpu_count() or 1


_PEAK: float | None = None


def peak_gflops() -> float:
    """A quick fp32 matmul rate of this machine at THREADS (torch.mm 1024^3, best of 5), measured once per
    process: figure 3 uses it for the FLOP floor of a model. Figure 7 measures the peak properly, interleaved."""
    global _PEAK
    if _PEAK is None:
        import torch
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(5))
        _PEAK = 2 * 1024 ** 3 / best / 1e9
    return _PEAK


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
