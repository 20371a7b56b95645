"""Figure 17: `archc train` on a busy CPU: archc's thread choice (archc/threads.py) against torch's default threads.

Each side is a whole `archc train specs/digits_mlp.toml` process (a small MLP, batch 32); its speed is the training
samples/s of its epochs after the first (metrics.jsonl: training steps only). Sides, interleaved round by round:
- after: no flag (archc's choice: the cores this process may use, fewer when the machine is busy);
- before: `--threads D`, D = the threads torch starts with in a fresh process (its default, what archc used before);
- one thread: `--threads 1`, the speed the issue's OMP_NUM_THREADS=1 runs reached.
First on the machine as it is ("idle": nothing started here), then with one busy-loop process per core started by
this figure (after waiting for the 1-minute load average to show them, as archc reads it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

FIGURE = 17
KEY = "threads"
TITLE = "Training threads on a busy CPU: archc's choice vs torch's default"
A, B = "archc's choice (samples/s)", "the other side (samples/s)"
SPEC = "digits_mlp"
MISSES = ("A busy machine here is one busy-loop process per core at the same priority: the scheduler then gives any "
          "one thread at most about cores / (cores + threads) of a core, so no thread count reaches the idle "
          "single-thread speed; the goal compares with one thread under the same load.")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(common.ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def torch_default_threads() -> int:
    """torch.get_num_threads() in a fresh process (no OMP_NUM_THREADS): torch's own default here."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=_env(),
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def train_speed(folder: Path, epochs: int, threads: int | None) -> tuple[float, int]:
    """(training samples/s over the epochs after the first, the threads the run recorded) of one `archc train`."""
    out = Path(tempfile.mkdtemp(dir=folder)) / "run"
    args = [sys.executable, "-m", "archc.cli", "train", str(common.spec_path(SPEC)), "--out", str(out),
            "--epochs", str(epochs), "--json", "--no-optimize"] + (["--threads", str(threads)] if threads else [])
    proc = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"archc train failed: {proc.stderr.strip()[-300:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = rows[1:] or rows  # the first epoch pays for warm-up
    n = sum(r["samples_per_s"] * r["seconds"] for r in rows)
    used = json.loads((out / "result.json").read_text())["threads"]
    shutil.rmtree(out.parent, ignore_errors=True)
    return n / sum(r["seconds"] for r in rows), used


def busy_loops(n: int) -> list[subprocess.Popen]:
    """`n` processes that spin at the default priority (stopped by stop())."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def wait_for_load(target: float, limit_s: float) -> float:
    """Wait (at most limit_s) until the 1-minute load average reaches `target`; the load then."""
    end = time.monotonic() + limit_s
    while os.getloadavg()[0] < target and time.monotonic() < end:
        time.sleep(1)
    return os.getloadavg()[0]


SIDES = ("after", "before", "one")


def measure(folder: Path, rounds: int, epochs: int, default: int, sides: tuple[str, ...] = SIDES) -> dict[str, list]:
    """Speeds and recorded threads per side, interleaved (the order turns every round)."""
    flags = {"after": None, "before": default, "one": 1}
    out: dict[str, list] = {k: [] for k in sides}
    threads: dict[str, int] = {}
    for r in range(rounds):
        for key in (sides if r % 2 == 0 else sides[::-1]):
            speed, used = train_speed(folder, epochs, flags[key])
            out[key].append(speed)
            threads[key] = used
    return out | {"threads": [threads.get(k) for k in SIDES]}


def rows_for(label: str, speeds: dict[str, list], note: str, idle_one: float | None) -> list[dict]:
    """archc's choice against each other side measured (and, busy, against one thread without the busy loops)."""
    busy = label == "busy"
    after, (t_after, t_before, _) = common.median(speeds["after"]), speeds["threads"]
    names = {"before": f"torch's default ({t_before})", "one": "one thread"}
    goals = {"before": 1.0, "one": 0.8}  # busy: no slower than before, and >= 0.8 of one thread's speed
    rows = []
    for side in (k for k in ("before", "one") if k in speeds):
        other = common.median(speeds[side])
        rows.append(common.row(FIGURE, f"{label}: archc ({t_after} thread(s)) vs {names[side]}", after, other,
                               unit="samples/s", goal=f">= {goals[side]:g}" if busy else "",
                               met=common.at_least(after / other, goals[side]) if busy else None,
                               note=f"{note}; paired ratio {common.paired_ratio(speeds['after'], speeds[side]):.2f}"))
    if idle_one is not None:
        rows.append(common.row(FIGURE, f"{label}: archc vs one thread on the machine without the busy loops", after,
                               idle_one, unit="samples/s", note="how much of the unloaded speed the busy machine leaves"))
    return rows


def run(quick: bool = False) -> tuple[list[dict], str]:
    if common.spec_path(SPEC) is None:
        return [common.skipped(FIGURE, SPEC, "spec not found")], ""
    rounds, epochs, settle = (1, 2, 0) if quick else (4, 12, 120)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else common.cpu_count()
    default = torch_default_threads()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="archc-threads-") as tmp:
        folder = Path(tmp)
        load = os.getloadavg()[0]
        idle = None if quick else measure(folder, rounds, epochs, default)  # --quick: two busy runs alone
        if idle is not None:
            rows += rows_for("as is", idle, f"load {load:.1f} at start, {rounds} round(s) x {epochs} epochs", None)
        procs = busy_loops(cores)
        try:
            load = wait_for_load(cores + 0.5, settle)
            busy = measure(folder, rounds, epochs, default, sides=("after", "one") if quick else SIDES)
        finally:
            stop(procs)
        rows += rows_for("busy", busy, f"{cores} busy loop(s), load {load:.1f} before the first run",
                         common.median(idle["one"]) if idle is not None else None)
    return rows, (f"{cores} cores; torch's default here: {default} threads. Each sample/s figure is a median over "
                  "rounds of whole `archc train` runs (samples/s of the epochs after the first). The busy rows run "
                  "with one extra spinning process per core; archc decides from the load average at the start of "
                  "the run (archc/threads.py).")
