"""`make bench`: run every benchmark figure and write benchmarks/results/RESULTS.md and results.json.

    .venv/bin/python benchmarks/run.py [--quick] [--only 2,infer_overhead ...] [--out DIR] [--threads auto|N|default]

A figure is one module, benchmarks/bench_<subject>.py, found here by that name: FIGURE (its number), KEY (its name
for --only), TITLE, A and B (the two sides compared), `run(quick: bool) -> (rows, details)` (rows made with
common.row; details: markdown under the table), optionally MISSES (markdown shown when a row misses its goal) and
MEASURED (set by run() when its rows were measured earlier, not now).
--quick runs every figure with tiny repeat counts (tests/benchmarks/test_bench_smoke.py). Adding a figure is adding
a file. Shared helpers live in common.py, the hand-written twins of figure 1 in handwritten.py.

Figures (issue 7): 1 train, 2 infer_overhead, 3 ort_vs_torch, 4 cold_start, 5 compile_scaling, 6 export, 7 peak,
8 gpu (measured on a CUDA machine, else read from results/gpu_results.json), 9 diffusion (sample quality); issue 14: tabular (specs/penguins.toml vs scikit-learn on the same split; issue 21: small-data defaults); issue 20:
16 loader (JPEG folder read per batch vs a hand-written ImageFolder twin; peak memory at N and 4N images); issue 21: 17 threads
(archc train beside busy loops: archc's thread choice vs torch's default); issue 25: 20 fsdp (DDP vs FSDP2 on 2 CPU
ranks: SmolLM-135M's tokens/s and peak memory per rank, and the largest model each fits in a memory budget). Every
comparison interleaves its two sides in this one process (or, for cold starts, round-robin fresh processes) and
reports medians and their ratio. --only re-runs some figures and keeps the others' last results from the JSON in
--out. A figure that fails is reported as a failed row; the others still run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

ENTRY_POINT = ("FIGURE", "KEY", "TITLE", "A", "B", "run")


def figure_modules() -> list:
    """Every benchmarks/bench_*.py module, in figure order; each must have the entry point above."""
    mods = [importlib.import_module(p.stem) for p in sorted(HERE.glob("bench_*.py"))]
    for mod in mods:
        missing = [name for name in ENTRY_POINT if not hasattr(mod, name)]
        if missing:
            raise SystemExit(f"{mod.__name__}.py: a figure module needs {', '.join(missing)}")
    numbers, keys = [m.FIGURE for m in mods], [m.KEY for m in mods]
    if len(set(numbers)) < len(mods) or len(set(keys)) < len(mods):
        raise SystemExit(f"figure numbers and keys must be unique: {sorted(zip(numbers, keys))}")
    return sorted(mods, key=lambda m: m.FIGURE)


def machine(threads: int | None, load_start: tuple[float, ...]) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(ram / 2**30, 1) if ram else None,
            "python": platform.python_version(), "platform": platform.platform(),
            "threads": threads if threads is not None else "library defaults",
            "load_average_at_start": [round(x, 2) for x in load_start]}
    for mod in ("torch", "onnxruntime", "onnx", "numpy"):
        try:
            info[mod] = importlib.import_module(mod).__version__
        except Exception:
            info[mod] = None
    return info


def select(only: list[str], mods: list) -> set[int]:
    """Figure numbers from --only values (numbers or keys, comma separated)."""
    keys = {m.KEY: m.FIGURE for m in mods}
    numbers = set(keys.values())
    wanted: set[int] = set()
    for item in ",".join(only).split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit() and int(item) in numbers:
            wanted.add(int(item))
        elif item in keys:
            wanted.add(keys[item])
        else:
            raise SystemExit(f"--only: unknown figure {item!r}; expected {min(numbers)}-{max(numbers)} or one of "
                             f"{', '.join(sorted(keys))}")
    return wanted


def run_figure(mod, quick: bool) -> dict:
    start = time.perf_counter()
    try:
        rows, details = mod.run(quick=quick)
        error = None
    except Exception as e:  # a broken figure must not lose the others
        rows, details = [common.skipped(mod.FIGURE, f"figure {mod.FIGURE}", f"failed: {type(e).__name__}: {e}")], ""
        error = traceback.format_exc()
    return {"figure": mod.FIGURE, "key": mod.KEY, "title": mod.TITLE, "a": mod.A, "b": mod.B, "rows": rows,
            "details": details, "misses": getattr(mod, "MISSES", ""), "seconds": round(time.perf_counter() - start, 1),
            "measured": getattr(mod, "MEASURED", None) or dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "error": error, "quick": quick}


def optimizations(figures: list[dict]) -> list[str]:
    """Every 'optimization before/after' row, gathered in one table."""
    rows = [(f["figure"], r) for f in figures for r in f["rows"] if "optimization before/after" in r.get("note", "")]
    if not rows:
        return []
    out = ["", "## Optimizations measured (before → after)", "",
           "Each was timed in the same run as its baseline (interleaved). None is applied to archc's own files "
           "by this harness: the code belongs to other owners, so each is a measured suggestion (the note says "
           "where it would go). Ratio = after / before (< 1 is faster; for samples/s rows > 1 is faster).", "",
           "| # | change | before | after | ratio |", "| --- | --- | ---: | ---: | ---: |"]
    for fig, r in rows:
        out.append(f"| {fig} | {r['name']} | {fmt(r['b'], r.get('unit', ''))} | {fmt(r['a'], r.get('unit', ''))} | "
                   f"{fmt(r['ratio'])} |")
    return out


# ---- writing ---------------------------------------------------------------------------------------------
def fmt(x, unit: str = "") -> str:
    if x is None:
        return "—"
    ax = abs(x)
    s = f"{x:,.0f}" if ax >= 1000 else f"{x:.1f}" if ax >= 100 else f"{x:.2f}" if ax >= 1 else f"{x:.3f}"
    return f"{s} {unit}".strip()


def mark(met) -> str:
    return {True: "yes", False: "**MISS**", None: "—"}[met]


def markdown(report: dict) -> str:
    m = report["machine"]
    out = ["# archc benchmarks", "",
           f"Generated by `make bench` (`benchmarks/run.py`{' --quick' if report['quick'] else ''}) on "
           f"{report['date']} in {report['seconds']:.0f} s.", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; Python {m['python']}, torch "
           f"{m['torch']}, onnxruntime {m['onnxruntime']}, onnx {m['onnx']}, numpy {m['numpy']}; {m['platform']}.",
           f"Threads per side: {m['threads']}; load average at start {m['load_average_at_start']}, at end "
           f"{report['load_average_at_end']} (other work shares this machine: each comparison's sides are interleaved "
           "in one process so drift hits both; figures are medians of rounds).", "",
           "Columns: `a` and `b` are the two sides named in each figure's heading, `ratio` = a / b, `met` says "
           "whether the row reaches its goal (— where the row has none).", "",
           "## Summary", "", "| # | figure | rows met | missed | not measured |", "| --- | --- | ---: | ---: | ---: |"]
    for fig in report["figures"]:
        rows = fig["rows"]
        met = sum(r["met"] is True for r in rows)
        miss = sum(r["met"] is False for r in rows)
        skip = sum(r["a"] is None for r in rows)
        out.append(f"| {fig['figure']} | {fig['title']} | {met} | {miss} | {skip} |")
    for fig in report["figures"]:
        out += ["", f"## {fig['figure']}. {fig['title']}", "",
                f"a = {fig['a']}; b = {fig['b']}." + (f" Measured {fig['measured']}" if fig.get("measured") else "")
                + (f" in {fig['seconds']:.0f} s." if fig.get("seconds") else ""), "",
                "| name | a | b | ratio | goal | met | note |", "| --- | ---: | ---: | ---: | --- | --- | --- |"]
        for r in fig["rows"]:
            note = r["note"].replace("|", "/")
            out.append(f"| {r['name']} | {fmt(r['a'], r.get('unit', ''))} | {fmt(r['b'], r.get('unit', ''))} | "
                       f"{fmt(r['ratio'])} | {r['goal'] or '—'} | {mark(r['met'])} | {note} |")
        if fig.get("details"):
            out += ["", fig["details"]]
        if fig.get("misses") and any(r["met"] is False for r in fig["rows"]):
            out += ["", fig["misses"]]
        if fig.get("error"):
            out += ["", "```", fig["error"].strip()[-1500:], "```"]
    out += optimizations(report["figures"])
    extra = HERE / "NOTES.md"
    if extra.exists():
        out += ["", extra.read_text().strip()]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny repeat counts (the smoke test)")
    ap.add_argument("--only", action="append", default=[], help="figures to run: numbers or keys, comma separated")
    ap.add_argument("--out", type=Path, default=common.RESULTS_DIR,
                    help="folder for RESULTS.md and results.json (default benchmarks/results)")
    ap.add_argument("--threads", default="auto",
                    help="threads per side for torch and ORT: N, 'default' (each library's own), or 'auto' "
                         "(default: 1 when the machine is busy, load average > 0.5, else the library defaults)")
    args = ap.parse_args()
    start = time.perf_counter()
    load = os.getloadavg()
    if args.threads == "auto":
        threads = 1 if load[0] > 0.5 else None
    elif args.threads == "default":
        threads = None
    else:
        threads = int(args.threads)
    common.set_threads(threads)
    mods = figure_modules()
    wanted = select(args.only, mods) if args.only else {m.FIGURE for m in mods}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "results.json"
    previous = {}
    if args.only and json_path.exists():
        try:
            previous = {f["figure"]: f for f in json.loads(json_path.read_text())["figures"]}
        except (ValueError, KeyError):
            previous = {}
    figures = []
    for mod in mods:
        if mod.FIGURE in wanted:
            print(f"figure {mod.FIGURE}: {mod.TITLE} ...", flush=True)
            fig = run_figure(mod, args.quick)
            print(f"  {fig['seconds']:.0f} s, {len(fig['rows'])} rows" + (" (FAILED)" if fig["error"] else ""),
                  flush=True)
            figures.append(fig)
        elif mod.FIGURE in previous:
            figures.append(previous[mod.FIGURE])
    report = {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick,
              "seconds": round(time.perf_counter() - start, 1), "machine": machine(threads, load),
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "figures": figures}
    if common._WORKDIR is not None:  # exported models and samples of this run
        shutil.rmtree(common._WORKDIR, ignore_errors=True)
    common.write_atomic(json_path, json.dumps(report, indent=1) + "\n")
    common.write_atomic(args.out / "RESULTS.md", markdown(report))
    print(f"wrote {args.out / 'RESULTS.md'} and {json_path} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
