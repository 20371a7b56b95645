"""Figure 11: what `archc build` costs for every zoo spec (specs/zoo/), end to end, as a user runs it.

Each spec is built by the `archc build SPEC -o FILE` command with its default options, in a fresh process: `a` is
the command's wall time (Python start-up, imports, compile, lower, export with its parity check, the optimizer's
decision, the KV-cache file of a language model, writing), `b` the process's peak resident memory in GiB (from
wait4, as /usr/bin/time -v reports it). The note names the parts the command prints itself (its export line:
torch.onnx and onnx.checker; its total) and the optimizer's decision. GPT-2 is built with --no-optimize too;
its goal is issue 19's: the default build costs at most 1.2x the time and memory of --no-optimize.

Run as a script it profiles where the export function alone (no start-up, compile, optimizer or KV-cache file)
spends its time, phase by phase, before and after issue 12:

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
import re
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
TITLE = "`archc build` end to end per zoo spec: wall time and peak memory"
A, B = "`archc build` wall (s)", "its peak RSS (GiB)"
GOAL_RATIO = 1.2       # the default build against --no-optimize, time and memory (GPT-2 small)
PEAK_GOAL = 2.5        # issue 24/23: peak RSS of `archc build` at most 2.5x the weights' bytes ...
PEAK_GOAL_FROM = 2**30  # ... for a large model (from 1 GiB of weights: Qwen2-0.5B), where start-up does not dominate
RATIO_ROUNDS = 4       # runs of each, alternating A B B A ...: on a shared machine single runs differ by 1.3x
QUICK_SPEC = ROOT / "specs" / "digit_classifier.toml"
ARCHC = Path(sys.executable).with_name("archc")


def zoo_specs() -> list[Path]:
    return sorted(p for p in (ROOT / "specs" / "zoo").glob("*.toml") if not p.name.endswith(".weights.toml"))


# The peak is read by a small launcher process that starts the build and waits for it: Linux folds the memory
# high-water mark of the image a process replaces at exec into its ru_maxrss, so a build started straight from this
# process (gigabytes after figure 5's 100,000-node builds) would report this process's peak as its own (every zoo
# spec read 4.97 GiB, 2026-12-06). The launcher is a fresh, small Python, so its child's figure is the build's own.
LAUNCHER = ("import os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[2:])\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "open(sys.argv[1], 'w').write(f'{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}')\n")


def build_cost(path: Path, *flags: str) -> dict:
    """`archc build SPEC -o FILE [flags]` in a fresh process: wall seconds, peak RSS (GiB), its output."""
    out = Path(tempfile.mkdtemp())
    cmd = [str(ARCHC) if ARCHC.exists() else "archc", "build", str(path), "-o", str(out / "m.onnx"), *flags]
    with open(out / "log", "w+") as log:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", LAUNCHER, str(out / "usage"), *cmd], stdout=log,
                       stderr=subprocess.STDOUT, cwd=out)
        wall = time.perf_counter() - t
        maxrss, rc = (int(x) for x in (out / "usage").read_text().split())
        log.seek(0)
        text = log.read()
    for f in out.iterdir():
        f.unlink()
    out.rmdir()
    return {"wall_s": wall, "peak_gib": maxrss * 1024 / 2**30, "rc": rc, "output": text}


def weight_bytes(path: Path) -> int:
    """The spec's weights in bytes (float32), from validate's count (no torch)."""
    from archc.pipeline import compile_spec

    return compile_spec(path).graph.total_params * 4


def summary(output: str) -> str:
    """The parts the command names in its output: its export line, total, and the optimizer's decision."""
    parts = []
    m = re.search(r"export \((\w+)\): ([\d.]+) s; total ([\d.]+) s", output)
    if m:
        parts.append(f"export ({m.group(1)}) to the checked file {m.group(2)} s, command's own total {m.group(3)} s")
    for line in output.splitlines():
        if line.startswith("optimized model "):
            parts.append("onnxslim: " + line.split(": ", 1)[1])
        elif line.startswith("note: graph optimization of the model"):
            parts.append("onnxslim " + line.split(") ", 1)[1].split(" (--optimize")[0])
    return "; ".join(parts)


def paired(path: Path, rounds: int) -> tuple[dict, dict]:
    """The default build and --no-optimize, alternating (A B, B A, ...): (default, plain) with the medians of
    their wall times and peak RSS, and the default build's output."""
    runs: dict[str, list[dict]] = {"default": [], "plain": []}
    for r in range(rounds):
        for side in ("default", "plain") if r % 2 == 0 else ("plain", "default"):
            runs[side].append(build_cost(path, *(["--no-optimize"] if side == "plain" else [])))
    med = {side: {"wall_s": statistics.median(x["wall_s"] for x in v),
                  "peak_gib": statistics.median(x["peak_gib"] for x in v),
                  "rc": max(x["rc"] for x in v), "output": v[0]["output"]} for side, v in runs.items()}
    return med["default"], med["plain"]


def run(quick: bool = False) -> tuple[list[dict], str]:
    rows = []
    for path in [QUICK_SPEC] if quick else zoo_specs():
        r, plain = paired(path, RATIO_ROUNDS) if path.stem == "gpt2" else (build_cost(path), None)
        if r["rc"] != 0:
            rows.append(common.skipped(FIGURE, path.stem, (r["output"].strip().splitlines() or ["?"])[-1][:160]))
            continue
        goal, met, note = "", None, summary(r["output"])
        weights = weight_bytes(path)
        peak_x = r["peak_gib"] * 2**30 / weights
        note += f"; peak / weights ({weights / 2**30:.2f} GiB of float32) {peak_x:.2f}x"
        if weights >= PEAK_GOAL_FROM:
            goal, met = f"peak RSS <= {PEAK_GOAL:g}x the weights' bytes", bool(peak_x <= PEAK_GOAL)
        if plain is not None:
            time_x, mem_x = r["wall_s"] / plain["wall_s"], r["peak_gib"] / plain["peak_gib"]
            goal = f"default / --no-optimize <= {GOAL_RATIO:g} (time, memory)"
            met = bool(time_x <= GOAL_RATIO and mem_x <= GOAL_RATIO)
            note += (f"; medians of {RATIO_ROUNDS} alternating runs each; --no-optimize {plain['wall_s']:.1f} s, "
                     f"{plain['peak_gib']:.2f} GiB: ratio time {time_x:.2f}, memory {mem_x:.2f}")
        rows.append(common.row(FIGURE, path.stem, r["wall_s"], r["peak_gib"], goal=goal, ratio=None, unit="",
                               met=met, note=note))
    details = ("One fresh `archc build SPEC -o FILE` process per spec, default options, as a user runs it: wall "
               "time from start to exit, peak RSS from wait4 (the process's maximum resident set). GPT-2: the "
               f"default build and --no-optimize alternate, {RATIO_ROUNDS} runs each, medians. Phase profile of the "
               "export function alone, before/after issue 12: `python benchmarks/bench_export_zoo.py` (see the "
               "module docstring).")
    return rows, details


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
    args = ap.parse_args()
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
