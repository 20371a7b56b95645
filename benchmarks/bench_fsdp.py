"""Figure 20: DDP against FSDP2 (`[train] strategy`) on 2 CPU ranks (gloo): speed and peak memory per rank of the zoo's
SmolLM-135M, and the largest model each strategy trains within a fixed memory budget per rank.

Speed and memory: whole `archc train specs/zoo/smollm_135m.toml --nproc 2 --strategy ddp|fsdp` runs, interleaved
(DDP, FSDP2, then FSDP2, DDP, ...), on a small generated text folder (byte tokens, 128-token windows, batch 4: 2
windows per rank a step, 4 steps an epoch, 2 epochs). Tokens/s is the second epoch's training windows/s x 128
(metrics.jsonl; the first pays for warm-up); peak memory per rank is what the run records in result.json
(`peak_memory.rss`: each rank's peak resident set over its epochs, before rank 0's test split and export), rank 1's
(training alone) and rank 0's (which also writes the checkpoints) apart.

The budget: archc's own per-rank estimate (archc.memory.report, what `archc validate --nproc 2` prints)
for the smollm spec with `[params] layers` bisected (width 576 kept), per strategy, the largest depth whose estimate
fits BUDGET; then each found model is trained for 2 steps and rank 1's measured peak set beside the estimate (which
leaves out torch itself, gloo's and FSDP's buffers and allocator slack: the row says by how much; goal: within
MARGIN). About 30 minutes on 2 loaded CPU cores (6 runs of `archc train`, each with its two exports).
All runs set MALLOC_MMAP_THRESHOLD_=65536 (glibc returns large freed blocks to the system, so the resident peak is
what the ranks held, not what malloc kept cached).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import common

FIGURE = 20
KEY = "fsdp"
TITLE = "DDP vs FSDP2 on 2 CPU ranks: SmolLM-135M speed and memory per rank; the largest model in a budget"
A, B = "FSDP2 (strategy = \"fsdp\")", "DDP (strategy = \"ddp\")"
SPEC = common.SPECS_DIR / "zoo" / "smollm_135m.toml"
RANKS, BATCH, SEQ = 2, 4, 128
BUDGET = 2 * 2**30  # bytes per rank for the largest-model rows
MIB = 2**20
# what a rank holds beyond archc's estimate: torch itself (~350 MiB measured in a tiny 2-rank run), gloo's and
# FSDP's buffers, allocator slack
MARGIN = 1024 * MIB
WORDS = ("the model trains on a small text of words drawn at random from this list so every rank reads the same "
         "bytes in the same order and each window holds one hundred and twenty eight of them").split()

DETAILS = (f"{RANKS} ranks on the CPU (gloo), one torch thread each; data: generated text, byte tokens, {SEQ}-token "
           f"windows, global batch {BATCH}. Memory: each rank's peak resident set over its training (result.json "
           "`peak_memory.rss`), MALLOC_MMAP_THRESHOLD_=65536. The estimate is archc's (`archc validate SPEC --nproc "
           "2`): weights, gradients (and DDP's gradient buckets), optimizer state (sharded by fsdp) and activations; "
           "it leaves out torch itself, gloo's and FSDP's buffers and allocator slack, so the measured peak exceeds "
           "it by a roughly fixed amount (the last rows' difference).")


def text_folder(folder: Path, files: int, windows: int) -> Path:
    """`files` text files of `windows` 128-byte windows each (and a few bytes more): 8 train, 1 val, 1 test."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(files):
        words: list[str] = []
        while len(" ".join(words)) < windows * SEQ + 8:
            words.append(rng.choice(WORDS))
        (folder / f"part{i:02d}.txt").write_text(" ".join(words)[:windows * SEQ + 8])
    return folder


def spec(raw: dict, layers: int | None, strategy: str, path: Path) -> Path:
    """The smollm spec as JSON with [params] layers (None: its own) and the figure's [train]."""
    raw = json.loads(json.dumps(raw))
    if layers is not None:
        raw["params"]["layers"] = layers
    raw["train"] = {"batch_size": BATCH, "strategy": strategy, "epochs": 1}
    path.write_text(json.dumps(raw))
    return path


def estimate(raw: dict, layers: int | None, strategy: str) -> tuple[int, int]:
    """(archc's per-rank training memory estimate in bytes, parameters) at `layers` blocks over RANKS ranks."""
    from archc.memory import report
    from archc.pipeline import compile_spec

    raw = json.loads(json.dumps(raw))
    if layers is not None:
        raw["params"]["layers"] = layers
    raw["train"] = {"batch_size": BATCH, "strategy": strategy}
    c = compile_spec(raw, name="smollm")
    return report(c.graph, c.spec.train, RANKS).json["total"], c.graph.total_params  # type: ignore[union-attr]


def largest(raw: dict, strategy: str, budget: int, high: int = 1024) -> tuple[int, int, int]:
    """(layers, estimate, parameters) of the deepest model whose estimate fits `budget` (bisection on layers)."""
    lo, hi = 0, high  # estimate(lo) fits (0 blocks: the embeddings and head alone, checked below); hi does not
    if estimate(raw, 1, strategy)[0] > budget:
        raise RuntimeError(f"{strategy}: even one block exceeds the budget")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate(raw, mid, strategy)[0] <= budget:
            lo = mid
        else:
            hi = mid
    need, params = estimate(raw, lo, strategy)
    return lo, need, params


def train(spec_file: Path, data: Path, out: Path, strategy: str, epochs: int) -> dict:
    """One `archc train --nproc 2` run: {"tokens_per_s": last epoch's, "rss": [peak bytes per rank]}."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(common.ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    args = [sys.executable, "-m", "archc.cli", "train", str(spec_file), "--data", f"text:{data}", "--out", str(out),
            "--nproc", str(RANKS), "--strategy", strategy, "--epochs", str(epochs), "--device", "cpu",
            "--no-optimize", "--quiet", "--json", "--no-tensorboard"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"archc train --strategy {strategy} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    result = json.loads((out / "result.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    shutil.rmtree(out, ignore_errors=True)
    return {"tokens_per_s": rows[-1]["samples_per_s"] * SEQ, "rss": result["peak_memory"]["rss"]}


def tiny(raw: dict) -> dict:
    """--quick: a tiny model of the same architecture."""
    raw = json.loads(json.dumps(raw))
    raw["params"] |= {"dim": 32, "heads": 4, "kv_heads": 2, "ffn": 64, "vocab": 256, "layers": 2}
    raw["inputs"]["tokens"]["vocab"] = 256
    return raw


def speed_runs(raw: dict, rounds: int, folder: Path) -> dict[str, list[dict]]:
    """Whole runs of each strategy, interleaved: {strategy: [train()'s record per run]}."""
    data = text_folder(folder / "speed", 10, 2)   # 8 train files x 2 windows: 4 steps of batch 4
    runs: dict[str, list[dict]] = {"fsdp": [], "ddp": []}
    for r in range(rounds):
        for strategy in (("ddp", "fsdp") if r % 2 == 0 else ("fsdp", "ddp")):
            path = spec(raw, None, strategy, folder / f"{strategy}.json")
            runs[strategy].append(train(path, data, folder / f"run-{strategy}-{r}", strategy, 2))
    return runs


def speed_rows(raw: dict, runs: dict[str, list[dict]], name: str) -> list[dict]:
    """Tokens/s, and the peak memory of rank 0 (which also writes the checkpoints) and of rank 1 (training alone)."""
    speed = {s: common.median([x["tokens_per_s"] for x in v]) for s, v in runs.items()}
    est = {s: estimate(raw, None, s)[0] / MIB for s in runs}
    rows = [common.row(FIGURE, f"{name}: training tokens/s (2 ranks, batch {BATCH} x {SEQ})", speed["fsdp"],
                       speed["ddp"], unit="tok/s",
                       note=f"median of {len(runs['ddp'])} run(s) each, interleaved; the second epoch of 4 steps; "
                            "per run: fsdp " + ", ".join(f"{x['tokens_per_s']:.1f}" for x in runs["fsdp"])
                            + "; ddp " + ", ".join(f"{x['tokens_per_s']:.1f}" for x in runs["ddp"]))]
    for rank, what in ((1, "training alone"), (0, "also writes the checkpoints")):
        peak = {s: common.median([x["rss"][rank] for x in v]) / MIB for s, v in runs.items()}
        rows.append(common.row(FIGURE, f"{name}: peak memory of rank {rank} ({what})", peak["fsdp"], peak["ddp"],
                               unit="MiB",
                               note=f"peak resident set over the run's epochs, median of runs; archc's estimate per "
                                    f"rank: fsdp {est['fsdp']:,.0f} MiB, ddp {est['ddp']:,.0f} MiB; measured - "
                                    f"estimate: fsdp {peak['fsdp'] - est['fsdp']:+,.0f} MiB, ddp "
                                    f"{peak['ddp'] - est['ddp']:+,.0f} MiB"))
    return rows


def budget_runs(raw: dict, budget: int, folder: Path) -> tuple[dict, dict]:
    """The deepest model each strategy fits in `budget` per rank by archc's estimate ({strategy: (layers, estimate,
    parameters)}), and each trained for 2 steps ({strategy: peak bytes per rank})."""
    data = text_folder(folder / "steps", 10, 1)    # 8 train files x 1 window: 2 steps
    found = {s: largest(raw, s, budget) for s in ("fsdp", "ddp")}
    measured = {s: train(spec(raw, layers, s, folder / f"{s}-largest.json"), data, folder / f"run-{s}-largest", s,
                         1)["rss"] for s, (layers, _, _) in found.items()}
    return found, measured


def budget_rows(raw: dict, budget: int, found: dict, measured: dict) -> list[dict]:
    rows = [common.row(FIGURE, f"largest model within {budget / MIB:,.0f} MiB per rank (archc's estimate): "
                               "parameters", found["fsdp"][2], found["ddp"][2], unit="params",
                       note=f"[params] layers bisected at width {raw['params']['dim']}: fsdp {found['fsdp'][0]} "
                            f"blocks, ddp {found['ddp'][0]} blocks")]
    for s, (layers, need, params) in found.items():
        rss = measured[s]
        rows.append(common.row(FIGURE, f"{s} at {layers} blocks ({params:,} parameters): measured peak of rank 1 "
                                       "(training alone) vs archc's estimate", rss[1] / MIB, need / MIB, unit="MiB",
                               goal=f"<= estimate + {MARGIN / MIB:,.0f} MiB", met=rss[1] <= need + MARGIN,
                               note=f"2 steps trained; measured - estimate = {(rss[1] - need) / MIB:+,.0f} MiB; rank "
                                    f"0, which also writes the checkpoints, {rss[0] / MIB:,.0f} MiB "
                                    f"({(rss[0] - need) / MIB:+,.0f}); the budget {budget / MIB:,.0f} MiB "
                                    + ("held" if max(rss) <= budget else "exceeded")))
    return rows


def run(quick: bool = False) -> tuple[list[dict], str]:
    if not SPEC.exists():
        return [common.skipped(FIGURE, "smollm_135m", "spec not found")], ""
    raw = tomllib.loads(SPEC.read_text())
    budget, rounds, name = BUDGET, 2, "smollm_135m"
    if quick:  # a tiny model of the same architecture, one round, a budget it fits in a few blocks
        raw, budget, rounds, name = tiny(raw), 2 * MIB, 1, "smollm (tiny, --quick)"
    with tempfile.TemporaryDirectory(prefix="archc-fsdp-") as tmp:
        rows = speed_rows(raw, speed_runs(raw, rounds, Path(tmp)), name)
        rows += budget_rows(raw, budget, *budget_runs(raw, budget, Path(tmp)))
    return rows, DETAILS
