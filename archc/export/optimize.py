"""Graph simplification of an exported model, decided by the graph alone: the same spec, seed and weights give
the same file.

The tool is onnxslim (constant folding, dead-code removal, shape-plumbing and pattern fusions in plain ONNX ops).
Chosen by measurement over ONNX Runtime's offline optimizer and its transformer fusions (README, "Optimized
exports"): onnxslim halves the exported transformers' node counts (gpt_stdlib 608 -> 276) and writes standard
ONNX that onnx.checker accepts; ORT_ENABLE_EXTENDED writes ORT-internal ops (`SimplifiedLayerNormalization` in
the ONNX domain) that the checker rejects, and ORT's transformer optimizer fused no attention in archc's graphs.

What decides, in order (never a timing: a wall-clock race made two builds of one spec differ):
1. the budget, predicted from the plain graph before the tool runs: at most MAX_NODES nodes (time: onnxslim's
   passes cost ~1 ms per node) and MAX_WEIGHT_BYTES of initializers (memory: it holds several copies of the
   weights, ~13 of them at GPT-2 size: 9.3 GB against 2.8 GB for the plain build). Past it the optimizer is
   skipped with a note; `always` (`--optimize`) runs it anyway;
2. onnxslim runs without its constant de-duplication (`weight_tying`), which compares every pair of same-shape
   constants (10 of 11 s at 2,000 nodes, over 11 minutes at 20,000) and removes no node;
3. the simplified graph is kept when it has fewer compute nodes (nodes other than `Constant`, which ONNX
   Runtime turns into initializers when it loads a file either way) and at most 1% (or 4 KiB) more bytes of
   constants (a folded transpose of a tied weight would store it twice), and it passes the caller's check
   (onnx.checker and parity against torch, at both parity sizes). Any failure of the tool or of that check keeps
   the plain graph with a note, never an error.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import archc.metadata as keys

TOOL = "onnxslim"
META_KEY = keys.OPTIMIZED
ALWAYS = "always"               # the `optimize` value that runs the tool past its budget (`--optimize`)
SKIP_PASSES = ["weight_tying"]  # onnxslim's pairwise constant de-duplication: quadratic, removes no node
MAX_NODES = 5_000               # time budget, ~5 s: ~1 ms per node (2,000 nodes 1.5 s, 20,000 23 s)
MAX_WEIGHT_BYTES = 64 * 2**20   # memory budget: several copies of the weights (README, "Optimized exports")
MAX_GROWTH = 0.01               # kept with at most 1% (or 4 KiB) more bytes of constants: folded shapes and
GROWTH_BYTES = 4096             #   ranges (gpt_stdlib +0.03%, penguins' network +108 bytes), not a weight twice


@dataclass
class Decision:
    """What the optimizer did to one file: recorded as metadata archc.optimized (JSON) and printed as one line.
    Every field is a property of the graphs, so two builds of one spec record the same decision."""

    tool: str
    nodes_before: int
    nodes_after: int | None
    kept: bool
    why: str  # 'fewer nodes', 'no fewer compute nodes', 'more weight bytes', 'was skipped: ...', or what failed
    removed: dict[str, int] = field(default_factory=dict)  # op type -> nodes the tool removed (negative: added)
    bytes_before: int | None = None  # stored_bytes, plain and optimized
    bytes_after: int | None = None

    def record(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def line(self, what: str = "model") -> str:
        """`optimized model (onnxslim): 608 -> 276 nodes (-198 Constant, -24 Add, ...): kept` and its variants."""
        if self.nodes_after is None:
            return f"note: graph optimization of the {what} ({self.tool}) {self.why}; the plain export is kept"
        top = sorted(self.removed.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
        ops = ", ".join(f"{-n:+d} {op}" for op, n in top[:3]) + (", ..." if len(top) > 3 else "")
        verdict = "kept" if self.kept else f"{self.why}, the plain graph is kept"
        return (f"optimized {what} ({self.tool}): {self.nodes_before} -> {self.nodes_after} nodes"
                f"{f' ({ops})' if ops else ''}: {verdict}")


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


def over_budget(model: "onnx.ModelProto", weights: int | None = None) -> str | None:
    """Why running the optimizer on `model` would cost more than its budget (MAX_NODES, MAX_WEIGHT_BYTES), or None:
    predicted from the graph before the tool runs. `weights`: the weights' bytes where `model` does not hold them
    (archc.export.stream's skeleton)."""
    nodes = len(model.graph.node)
    weights = weight_bytes(model) if weights is None else weights
    if weights > MAX_WEIGHT_BYTES:
        return (f"was skipped: {weights / 2**20:,.0f} MiB of weights exceed its memory budget of "
                f"{MAX_WEIGHT_BYTES / 2**20:,.0f} MiB (--optimize runs it anyway)")
    if nodes > MAX_NODES:
        return f"was skipped: {nodes:,} nodes exceed its time budget of {MAX_NODES:,} (--optimize runs it anyway)"
    return None


def weight_bytes(model: "onnx.ModelProto") -> int:
    """Serialized bytes of the initializers (what the budget reads)."""
    return sum(t.ByteSize() for t in model.graph.initializer)


def stored_bytes(model: "onnx.ModelProto") -> int:
    """Serialized bytes of every constant tensor: the initializers and the `Constant` nodes' values (onnxslim
    turns the latter into the former)."""
    return weight_bytes(model) + sum(a.ByteSize() for n in model.graph.node if n.op_type == "Constant"
                                     for a in n.attribute)


def simplify(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """onnxslim's slim() of a copy of `model` (SKIP_PASSES skipped), with `model`'s inputs, outputs (dynamic axes
    named as in the spec), archc's value_info where those values survive, names and metadata put back."""
    import onnx
    import onnxslim

    slimmed = onnxslim.slim(onnx.ModelProto.FromString(model.SerializeToString()), skip_optimizations=SKIP_PASSES)
    if slimmed is None:
        raise RuntimeError("onnxslim returned no model")
    _restore(slimmed, model)
    return slimmed


def _restore(opt: "onnx.ModelProto", plain: "onnx.ModelProto") -> None:
    """Put the plain model's signature, value_info, names and metadata on the optimized one (in place)."""
    import onnx

    for field_ in ("input", "output"):
        before = [v.name for v in getattr(plain.graph, field_)]
        after = [v.name for v in getattr(opt.graph, field_)]
        if before != after:
            raise RuntimeError(f"the optimizer changed the graph's {field_}s from {before} to {after}")
        for mine, theirs in zip(getattr(opt.graph, field_), getattr(plain.graph, field_)):
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


def within_budget(model: "onnx.ModelProto", optimize: bool | str, weights: int | None = None) -> Decision | None:
    """None where the optimizer may run on `model`; else the decision to skip it, set in `model`'s metadata (in
    place, before the caller serializes it: no copy of the weights is made for a model past the budget)."""
    why = over_budget(model, weights) if optimize != ALWAYS else None
    return skipped(model, why) if why is not None else None


def skipped(model: "onnx.ModelProto", why: str) -> Decision:
    """A decision not to run the optimizer on `model`, set in its metadata."""
    decision = Decision(TOOL, len(model.graph.node), None, False, why)
    set_decision(model, decision)
    return decision


def verdict(plain: "onnx.ModelProto", opt: "onnx.ModelProto") -> Decision:
    """Whether to keep `opt` over `plain`, from the graphs alone: fewer compute nodes, and its constants stored in
    at most MAX_GROWTH (or GROWTH_BYTES) more bytes (folded shape constants; not a second copy of a weight)."""
    before, after = Counter(n.op_type for n in plain.graph.node), Counter(n.op_type for n in opt.graph.node)
    removed = {op: before[op] - after[op] for op in sorted(before | after) if before[op] != after[op]}
    compute = sum(n for op, n in removed.items() if op != "Constant")
    bytes_before, bytes_after = stored_bytes(plain), stored_bytes(opt)
    why = ("no fewer compute nodes" if compute <= 0 else
           "more weight bytes" if bytes_after > bytes_before + max(MAX_GROWTH * bytes_before, GROWTH_BYTES)
           else "fewer nodes")
    return Decision(TOOL, len(plain.graph.node), len(opt.graph.node), why == "fewer nodes", why, removed,
                    bytes_before, bytes_after)


def choose(plain: bytes, check: Callable[[bytes], Any], optimize: bool | str = True) -> Choice:
    """Simplify the serialized model `plain` where the budget allows (or `optimize` is ALWAYS), keep the result
    where `verdict` says so and `check` (onnx.checker and parity: it raises on a mismatch) passes. Never raises
    for the optimizer."""
    import onnx

    model = onnx.ModelProto.FromString(plain)
    before = len(model.graph.node)
    skip = within_budget(model, optimize)
    if skip is not None:
        return _plain(model, skip)
    try:
        opt = simplify(model)
    except Exception as e:  # a third-party tool: any failure keeps the plain graph
        return _plain(model, _failed(before, "failed", e))
    decision = verdict(model, opt)
    if not decision.kept:
        return _plain(model, decision)
    blob = opt.SerializeToString()
    try:
        checked = check(blob)
    except Exception as e:  # the optimized graph does not load, or no longer matches torch
        return _plain(model, _failed(before, "gave a graph that failed its check", e))
    return Choice(with_decision(opt, decision), decision, checked)


def _plain(model: "onnx.ModelProto", decision: Decision) -> Choice:
    return Choice(with_decision(model, decision), decision)


def _failed(before: int, what: str, e: Exception) -> Decision:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return Decision(TOOL, before, None, False, f"{what} ({type(e).__name__}: {first})")
