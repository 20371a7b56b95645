"""Figure 11: export time and peak memory of every zoo spec (specs/zoo/), as `archc build` runs it.

Each spec is compiled, lowered and exported in a fresh process (so its peak resident memory is its own; `a` is the
export() call incl. parity, `b` the process's peak RSS in GiB). Goal: GPT-2 small under 5 s on 2 cores.

Run as a script it profiles where the time goes, phase by phase, before and after issue 12:

    .venv/bin/python benchmarks/bench_export_zoo.py [--specs gpt2,bert] [--rounds 3] [--before REV] [--dynamo]

"before" is archc/export/onnx.py as it was at REV (default 8eeee4d, the commit issue 12's export work started
from), loaded from git into this process and run on the same compiled model, interleaved round by round with
today's export: both sides see the same load. Its phases are timed by wrapping the functions it calls
(torch.onnx.export, onnx.load, onnx.save_model, onnx.checker.check_model, ort.InferenceSession,
InferenceSession.run); today's come from ExportReport.phases. Prints medians; `--dynamo` adds one dynamo export.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIGURE = 11
KEY = "export_zoo"
TITLE = "Export time and peak memory per zoo spec"
A, B = "export() incl. parity (s)", "process peak RSS (GiB)"
GOAL_GPT2 = 5.0
QUICK_SPEC = ROOT / "specs" / "digit_classifier.toml"


def zoo_specs() -> list[Path]:
    return sorted(p for p in (ROOT / "specs" / "zoo").glob("*.toml") if not p.name.endswith(".weights.toml"))


def run(quick: bool = False) -> tuple[list[dict], str]:
    rows = []
    for path in [QUICK_SPEC] if quick else zoo_specs():
        proc = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True,
                              timeout=900)
        if proc.returncode != 0:
            rows.append(common.skipped(FIGURE, path.stem, (proc.stderr.strip().splitlines() or ["?"])[-1][:160]))
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        goal = f"<= {GOAL_GPT2:g} s" if path.stem == "gpt2" else ""
        rows.append(common.row(FIGURE, path.stem, r["export_s"], r["peak_gib"], goal=goal, ratio=None, unit="s",
                               met=common.at_most(r["export_s"], GOAL_GPT2) if goal else None,
                               note=f"{r['params']:,} params; axes {r['sizes']}; compile {r['compile_s']:.2f} s, "
                                    f"lower {r['lower_s']:.2f} s; {r['mb']:,.0f} MB; phases "
                                    + ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items())))
    details = ("One fresh process per spec: compile, lower (seeded), export with parity at two batch sizes; the "
               "export is the second of two in the process (the first pays torch.onnx's imports). Phase profile "
               "before/after issue 12: `python benchmarks/bench_export_zoo.py` (see the module docstring).")
    return rows, details


def child(path: Path) -> None:
    """One spec's figures, as a JSON line on stdout."""
    from archc.export import export
    from archc.lower import lower
    from archc.pipeline import compile_spec

    out = Path(tempfile.mkdtemp())
    t = time.perf_counter()
    compiled = compile_spec(path)
    t_compile = time.perf_counter() - t
    t = time.perf_counter()
    module = lower(compiled.graph, seed=0).eval()
    t_lower = time.perf_counter() - t
    export(compiled, out / "warm.onnx", module=module)
    t = time.perf_counter()
    report = export(compiled, out / "m.onnx", module=module)
    took = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
    print(json.dumps({"export_s": took, "peak_gib": peak, "params": compiled.graph.total_params,
                      "sizes": compiled.graph.sizes, "compile_s": t_compile, "lower_s": t_lower,
                      "mb": report.bytes / 1e6, "phases": report.phases}))


def load_before(rev: str):
    """archc.export.onnx as of `rev`, as a module of its own (it imports today's archc for everything else)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:archc/export/onnx.py"], check=True,
                         capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("archc_export_before", loader=None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    exec(compile(src, f"{rev}:archc/export/onnx.py", "exec"), mod.__dict__)
    return mod


@contextlib.contextmanager
def wrapped(phases: dict[str, float]):
    """Time the library calls the old export makes, by phase name."""
    import onnx
    import onnxruntime as ort
    import torch

    targets = [(torch.onnx, "export", "trace+fold"), (onnx, "load", "load"), (onnx, "save_model", "save"),
               (onnx.checker, "check_model", "check"), (ort, "InferenceSession", "session")]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in targets]

    def timer(fn, label):
        def inner(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[label] = phases.get(label, 0.0) + time.perf_counter() - t
        return inner

    cls = ort.InferenceSession
    run = cls.run
    try:
        for (obj, name, label), (_, _, fn) in zip(targets, saved):
            setattr(obj, name, timer(fn, label))
        cls.run = timer(run, "parity ort")
        yield
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
        cls.run = run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--specs", default="gpt2,bert")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", default="8eeee4d")
    ap.add_argument("--dynamo", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(Path(args.child))
    from archc.export import export
    from archc.lower import lower
    from archc.pipeline import compile_spec

    before = load_before(args.before)
    out = Path(tempfile.mkdtemp())
    for name in args.specs.split(","):
        t = time.perf_counter()
        compiled = compile_spec(ROOT / "specs" / "zoo" / f"{name}.toml")
        t_compile = time.perf_counter() - t
        t = time.perf_counter()
        module = lower(compiled.graph, seed=0).eval()
        t_lower = time.perf_counter() - t
        export(compiled, out / "warm.onnx", module=module)  # torch.onnx's one-time imports, paid by neither side
        walls: dict[str, list[float]] = {"before": [], "after": []}
        phases: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            p: dict[str, float] = {}
            t, c = time.perf_counter(), time.process_time()
            with wrapped(p):
                before.export(compiled, out / "before.onnx", module=module)
            walls["before"].append(time.perf_counter() - t)
            p["other (parity torch, metadata)"] = walls["before"][-1] - sum(p.values())
            p["process CPU"] = time.process_time() - c
            phases["before"].append(p)
            t, c = time.perf_counter(), time.process_time()
            report = export(compiled, out / "after.onnx", module=module)
            walls["after"].append(time.perf_counter() - t)
            q = dict(report.phases)
            q["other"] = walls["after"][-1] - sum(q.values())
            q["process CPU"] = time.process_time() - c
            phases["after"].append(q)
        print(f"\n{name}: {compiled.graph.total_params:,} params, axes {compiled.graph.sizes}; compile "
              f"{t_compile:.2f} s, lower {t_lower:.2f} s; export() medians of {args.rounds}, interleaved")
        for side in ("before", "after"):
            keys = list(dict.fromkeys(k for p in phases[side] for k in p))
            parts = ", ".join(f"{k} {statistics.median(p.get(k, 0.0) for p in phases[side]):.2f}" for k in keys)
            print(f"  {side:6s} {statistics.median(walls[side]):6.2f} s  ({parts})")
        print(f"  file: before {(out / 'before.onnx').stat().st_size / 1e6:.0f} MB, "
              f"after {(out / 'after.onnx').stat().st_size / 1e6:.0f} MB")
        if args.dynamo:
            t = time.perf_counter()
            try:
                r = export(compiled, out / "dynamo.onnx", module=module, exporter="dynamo")
                parts = ", ".join(f"{k} {v:.2f}" for k, v in r.phases.items())
                print(f"  dynamo {time.perf_counter() - t:6.2f} s  ({parts})")
            except Exception as e:
                print(f"  dynamo failed after {time.perf_counter() - t:.1f} s: {str(e).splitlines()[0][:200]}")


if __name__ == "__main__":
    sys.exit(main())
