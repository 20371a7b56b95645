"""Graph simplification of an exported model, kept only where it measurably helps.

The tool is onnxslim (constant folding, dead-code removal, shape-plumbing and pattern fusions in plain ONNX ops).
Chosen by measurement over ONNX Runtime's offline optimizer and its transformer fusions (README, "Optimized
exports"): onnxslim halves the exported transformers' node counts (gpt_stdlib 608 -> 276) and writes standard
ONNX that onnx.checker accepts; ORT_ENABLE_EXTENDED writes ORT-internal ops (`SimplifiedLayerNormalization` in
the ONNX domain) that the checker rejects, and ORT's transformer optimizer fused no attention in archc's graphs.
None of them made a model reliably faster on ONNX Runtime, which applies the same rewrites when it loads a file;
so each export times both graphs (batch 1, interleaved, `archc infer`'s session options) and keeps the
optimized one only when it is faster beyond noise. The optimized graph is parity-checked against torch by the
caller's check (the export's own, at both parity sizes); any failure of the tool or of that check keeps the plain
graph with a note, never an error.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

TOOL = "onnxslim"
META_KEY = "archc.optimized"
ROUNDS = 9          # timed rounds per side, the order alternating (A B, B A, ...)
ROUND_S = 0.02      # seconds of calls per round and side (at least one call)
MAX_CALLS = 50      # calls per round at most (a tiny model's run is microseconds)
NOISE = 0.03        # kept only when the median paired ratio is under 1 - NOISE ...
WINS = 0.75         # ... and the optimized graph won at least this share of the rounds


@dataclass
class Decision:
    """What the optimizer did to one file: recorded as metadata archc.optimized (JSON) and printed as one line."""

    tool: str
    nodes_before: int
    nodes_after: int | None
    ms_before: float | None
    ms_after: float | None
    kept: bool
    why: str  # 'faster', 'not faster', 'no fewer nodes', or what failed

    def record(self) -> str:
        return json.dumps(asdict(self))

    def line(self, what: str = "model") -> str:
        """`optimized model (onnxslim): 608 -> 276 nodes, batch 1 3.22 -> 2.90 ms: kept` and its variants."""
        if self.nodes_after is None:
            return f"note: graph optimization of the {what} ({self.tool}) {self.why}; the plain export is kept"
        ms = (f", batch 1 {self.ms_before:.3f} -> {self.ms_after:.3f} ms" if self.ms_before is not None
              and self.ms_after is not None else "")
        verdict = "kept" if self.kept else f"{self.why}, the plain graph is kept"
        return f"optimized {what} ({self.tool}): {self.nodes_before} -> {self.nodes_after} nodes{ms}: {verdict}"


def lines(report: Any) -> list[str]:
    """The optimizer's lines for an ExportReport: the model's decision, then its KV-cache model's (none when the
    export was not asked to optimize)."""
    cache = getattr(report, "kvcache", None)
    pairs = [(getattr(report, "optimized", None), "model"), (getattr(cache, "optimized", None), "KV-cache model")]
    return [d.line(what) for d, what in pairs if d is not None]


@dataclass
class Choice:
    """The serialized model to write (plain or optimized, with archc.optimized set), the decision, and the
    caller's check result for the optimized graph when it is the one kept (None otherwise)."""

    blob: bytes
    decision: Decision
    checked: Any = None


def simplify(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """onnxslim's slim() of a copy of `model`, with `model`'s inputs, outputs (dynamic axes named as in the
    spec), archc's value_info where those values survive, names and metadata put back."""
    import onnx
    import onnxslim

    slimmed = onnxslim.slim(onnx.ModelProto.FromString(model.SerializeToString()))
    if slimmed is None:
        raise RuntimeError("onnxslim returned no model")
    _restore(slimmed, model)
    return slimmed


def _restore(opt: "onnx.ModelProto", plain: "onnx.ModelProto") -> None:
    """Put the plain model's signature, value_info, names and metadata on the optimized one (in place)."""
    import onnx

    for field in ("input", "output"):
        before = [v.name for v in getattr(plain.graph, field)]
        after = [v.name for v in getattr(opt.graph, field)]
        if before != after:
            raise RuntimeError(f"the optimizer changed the graph's {field}s from {before} to {after}")
        for mine, theirs in zip(getattr(opt.graph, field), getattr(plain.graph, field)):
            mine.CopyFrom(theirs)
    produced = {v for n in opt.graph.node for v in n.output}
    del opt.graph.value_info[:]
    opt.graph.value_info.extend(v for v in plain.graph.value_info if v.name in produced)
    opt.producer_name, opt.producer_version = plain.producer_name, plain.producer_version
    opt.doc_string, opt.graph.name = plain.doc_string, plain.graph.name
    del opt.metadata_props[:]
    onnx.helper.set_model_props(opt, {p.key: p.value for p in plain.metadata_props})


def set_decision(model: "onnx.ModelProto", decision: Decision) -> None:
    """Set metadata archc.optimized of `model` (in place) to the decision."""
    import onnx

    props = {p.key: p.value for p in model.metadata_props} | {META_KEY: decision.record()}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)


def with_decision(model: "onnx.ModelProto", decision: Decision) -> bytes:
    """`model` serialized with archc.optimized set to the decision."""
    set_decision(model, decision)
    return model.SerializeToString()


def skipped(model: "onnx.ModelProto", why: str) -> Decision:
    """A decision not to run the optimizer on `model`, set in its metadata."""
    decision = Decision(TOOL, len(model.graph.node), None, None, None, False, why)
    set_decision(model, decision)
    return decision


def choose(plain: bytes, feeds: dict[str, np.ndarray], check: Callable[[bytes], Any]) -> Choice:
    """Simplify the serialized model `plain`, check the result with `check` (onnx.checker and parity: it raises on
    a mismatch), time both at `feeds` and keep the faster beyond noise. Never raises for the optimizer."""
    import onnx

    model = onnx.ModelProto.FromString(plain)
    before = len(model.graph.node)
    try:
        opt = simplify(model)
    except Exception as e:  # a third-party tool: any failure keeps the plain graph
        return _plain(model, _failed(before, "failed", e))
    after = len(opt.graph.node)
    if after >= before:
        return _plain(model, Decision(TOOL, before, after, None, None, False, "no fewer nodes"))
    blob = opt.SerializeToString()
    try:
        checked = check(blob)
    except Exception as e:  # the optimized graph does not load, or no longer matches torch
        return _plain(model, _failed(before, "gave a graph that failed its check", e))
    try:
        ms_before, ms_after, kept = compare(plain, blob, feeds)
    except Exception as e:  # ONNX Runtime could load it in the check, so this is unexpected: keep the plain
        return _plain(model, _failed(before, "could not be timed", e))
    decision = Decision(TOOL, before, after, round(ms_before, 4), round(ms_after, 4), kept,
                        "faster" if kept else "not faster")
    if kept:
        return Choice(with_decision(opt, decision), decision, checked)
    return _plain(model, decision)


def _plain(model: "onnx.ModelProto", decision: Decision) -> Choice:
    return Choice(with_decision(model, decision), decision)


def _failed(before: int, what: str, e: Exception) -> Decision:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return Decision(TOOL, before, None, None, None, False, f"{what} ({type(e).__name__}: {first})")


def compare(plain: bytes, opt: bytes, feeds: dict[str, np.ndarray]) -> tuple[float, float, bool]:
    """(plain ms, optimized ms, whether the optimized is faster beyond noise): medians of ROUNDS interleaved rounds
    at `feeds` on ONNX Runtime's CPU provider with `archc infer`'s session options."""
    import onnxruntime as ort

    from archc.runtime.session import CPU, session_options

    runs = []
    for blob in (plain, opt):
        sess = ort.InferenceSession(blob, session_options(), providers=[CPU])
        runs.append(lambda s=sess: s.run(None, feeds))
    times = interleaved(runs, ROUNDS, _calls(runs[0]))
    ratios = [b / a for a, b in zip(*times)]
    wins = sum(r < 1 for r in ratios)
    faster = statistics.median(ratios) < 1 - NOISE and wins >= WINS * len(ratios)
    return statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3, faster


def _calls(run: Callable[[], Any]) -> int:
    """Calls per timed round: about ROUND_S of them (after a warm-up call), 1..MAX_CALLS."""
    run()
    start = time.perf_counter()
    run()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, min(MAX_CALLS, int(ROUND_S / once)))


def interleaved(runs: list[Callable[[], Any]], rounds: int, calls: int) -> list[list[float]]:
    """Seconds per call of each run, one value per round; the order alternates every round."""
    times: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    for i in order:
        runs[i]()  # warm-up: the first run allocates
    for r in range(rounds):
        for i in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(calls):
                runs[i]()
            times[i].append((time.perf_counter() - start) / calls)
    return times
