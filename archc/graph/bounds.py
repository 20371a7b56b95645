"""Axis bounds: what the nodes index, collected per symbol and per int64 input, checked against [axes] and vocab.

An op says what it indexes through `Op.bounds`: a position table bounds `seq` by max_len (an AxisBound), an
embedding bounds the values of the ids it reads by num_embeddings (a ValueBound). Infer collects them into the
graph with the node that imposed each (`Collector`), then `check` compares the typical sizes of `[axes]` and the
inputs' `vocab` with them, so a mistake is one located error at validate, not a crash at forward or export. The
exporter picks its trace and parity sizes inside the same limits (`fits`, `candidates`).
"""
from __future__ import annotations

import math

from archc.errors import ArchcError, ShapeError
from archc.graph.ir import Graph, Limit, Node
from archc.ops.base import AxisBound, TensorType, base_axis
from archc.ops.sequence import size_of

# The sizes the export runs the model at (archc/export/onnx.py): traced at TRACE_BATCH and the typical sizes, then
# compared with ONNX Runtime at CHECK_BATCHES and sizes near them. Validate estimates memory at the same sizes.
TRACE_BATCH = 2
CHECK_BATCHES = (1, 3)          # both differ from the traced batch
PARITY_FLOPS = 2 * 10**10      # above this the parity checks run at shorter symbolic axes (see `affordable`)
TRACE = "the export's trace"


class Collector:
    """Gathers every node's bounds into graph.axis_limits / graph.value_limits, node by node, in graph order."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        graph.axis_limits, graph.value_limits = {}, {}
        # which graph inputs' values an int64 tensor carries: ids pass unchanged through slice, reshape, concat...
        self.origins: dict[str, set[str]] = {n: {n} for n, t in graph.inputs.items() if t.dtype == "int64"}

    def add(self, node: Node, ins: list[TensorType]) -> None:
        if node.out is not None and node.out.dtype == "int64":
            self.origins[node.id] = set().union(*(self.origins.get(i, set()) for i in node.inputs))
        for b in node.op.bounds(ins):
            if isinstance(b, AxisBound):
                limit = Limit(node.id, node.where, b.why, b.low, b.high, b.axis, b.hint)
                self.graph.axis_limits.setdefault(base_axis(b.axis), []).append(limit)
                continue
            for name in sorted(self.origins.get(node.inputs[b.input], ())):
                limit = Limit(node.id, node.where, b.why, high=b.high, hint=b.hint)
                self.graph.value_limits.setdefault(name, []).append(limit)


def check(graph: Graph, given: dict[str, int]) -> list[ArchcError]:
    """Input vocabularies, then [axes] sizes (`given`, the spec's) against the limits; symbols the spec leaves to
    archc's default size get a default inside them."""
    errors = [e for name in graph.value_limits for e in _check_values(graph, name)]
    for base, limits in graph.axis_limits.items():
        if base not in graph.sizes:
            continue  # an axis no input has (a pooled 'graphs' axis): its size follows the data
        if base in given:
            errors += _check_axis(graph, base, limits)[:1]  # one error per axis: the first node that rejects it
            continue
        fitting = [v for v in candidates(limits, graph.sizes[base]) if fits(graph, base, v)]
        if fitting:
            graph.sizes[base] = min(fitting, key=lambda v: (abs(v - graph.sizes[base]), v))
        else:
            shown = "; ".join(f"{lim.where} needs {_range(lim)} ({lim.why})" for lim in limits)
            errors.append(ShapeError(f"expected a size of axis '{base}' that every layer accepts, received "
                                     f"limits no size meets: {shown}", where=limits[-1].where, hint=limits[-1].hint))
    return errors


def _check_values(graph: Graph, name: str) -> list[ArchcError]:
    """One int64 input's declared vocab against what it indexes. Without a vocab, the smallest table it feeds is
    its vocab (or the axis its values index): export checks then draw ids inside it."""
    vocab, errors = graph.vocab.get(name), []
    limits = graph.value_limits[name]
    if vocab is None:
        tables = [lim.high for lim in limits if isinstance(lim.high, int)]
        axes = sorted({lim.high for lim in limits if isinstance(lim.high, str)})
        vocab = min(tables) if tables else axes[0] if len(axes) == 1 else None
        if vocab is None:
            return []
        graph.vocab[name] = vocab
    for lim in limits:
        op = graph.node(lim.node).op.name()
        received = f"vocab = {vocab!r} (inputs.{name}.vocab)"
        if isinstance(vocab, int) and isinstance(lim.high, int):
            if vocab > lim.high:
                errors.append(ShapeError(f"{op}: expected input '{name}' with vocab at most {lim.high} ({lim.why}), "
                                         f"received {received}", where=lim.where, hint=lim.hint))
        elif isinstance(vocab, str) and isinstance(lim.high, str):
            if vocab != lim.high:
                errors.append(ShapeError(f"{op}: expected input '{name}' with vocab = '{lim.high}' ({lim.why}), "
                                         f"received {received}", where=lim.where, hint=lim.hint))
        else:  # a fixed vocab indexing a symbolic axis, or values up to a symbol indexing a fixed table: the
            # axis's size is what is bounded
            axis, bound = (lim.high, {"low": vocab}) if isinstance(vocab, int) else (vocab, {"high": lim.high})
            why = f"input '{name}' has vocab = {vocab!r} and {lim.why}"
            graph.axis_limits.setdefault(base_axis(str(axis)), []).append(
                Limit(lim.node, lim.where, why, axis=str(axis), hint=lim.hint, **bound))  # type: ignore[arg-type]
    return errors


def _check_axis(graph: Graph, base: str, limits: list[Limit]) -> list[ArchcError]:
    """The spec's [axes] size of `base` against each limit, in graph order."""
    errors: list[ArchcError] = []
    for lim in limits:
        size = size_of(lim.axis, graph.sizes)
        if size is None or lim.allows(size):
            continue
        received = f"[axes] {base} = {graph.sizes[base]}" + (f", so '{lim.axis}' = {size}" if lim.axis != base else "")
        errors.append(ShapeError(f"{graph.node(lim.node).op.name()}: expected axis '{lim.axis}' of {_range(lim)} "
                                 f"({lim.why}), received {received}", where=lim.where, hint=lim.hint))
    return errors


def _range(lim: Limit) -> str:
    if isinstance(lim.high, int):
        return f"at most {lim.high}" if lim.low <= 1 else f"{lim.low}..{lim.high}"
    return f"at least {lim.low}"


def fits(graph: Graph, base: str, value: int) -> bool:
    """Whether symbol `base` at this size meets every limit on it (derived axes such as 'seq-1' included)."""
    if value < 1:
        return False
    low, high, others = _allowed(graph, base)
    if value < low or (high is not None and value > high):
        return False
    sizes = {**graph.sizes, base: value}
    return all(s is None or lim.allows(s) for lim in others for s in [size_of(lim.axis, sizes)])


def _allowed(graph: Graph, base: str) -> tuple[int, int | None, list[Limit]]:
    """The sizes of `base` its limits allow: one range for the limits on `base` or on `base` less a constant
    ('seq-3'), and the other limits (negative-start slices, 'seq[-3:]'), distinct ones once each. Kept on the graph
    until a limit is added."""
    limits = graph.axis_limits.get(base, [])
    hit = graph._fits.get(base)
    if hit is not None and hit[0] is limits and hit[1] == len(limits):
        return hit[2]
    probe, low, high, others = 10**15, 1, None, {}
    for lim in limits:
        size = size_of(lim.axis, {base: probe}) if "[" not in lim.axis else None
        if size is None:
            others.setdefault((lim.axis, lim.low, lim.high if isinstance(lim.high, int) else None), lim)
            continue
        cut = probe - size  # the limit on base - cut, as a limit on base
        low = max(low, lim.low + cut)
        if isinstance(lim.high, int):
            high = lim.high + cut if high is None else min(high, lim.high + cut)
    summary = (low, high, list(others.values()))
    graph._fits[base] = (limits, len(limits), summary)
    return summary


def candidates(limits: list[Limit], around: int) -> list[int]:
    """Sizes worth trying for a symbol: near `around` and at the edges of each limit (shifted by what a derived
    name cuts off: 'seq-1' <= 16 is seq <= 17)."""
    points = {1, around - 1, around, around + 1}
    for lim in limits:
        cut = _cut(lim.axis)
        for edge in (lim.low, lim.high if isinstance(lim.high, int) else None):
            if edge is not None:
                points |= {edge + cut - 1, edge + cut, edge + cut + 1}
    return sorted(p for p in points if p >= 1)


def _cut(axis: str) -> int:
    """How many positions a derived name cuts off its symbol ('seq-1-2' -> 3); 0 for other names."""
    probe = 10**9
    size = size_of(axis, {base_axis(axis): probe})
    return probe - size if size is not None and size > probe - 10**6 else 0


def interval(graph: Graph, base: str) -> tuple[int, int | None]:
    """The sizes of symbol `base` its limits allow, as one range (limits on sliced names shifted by the cut):
    what the ONNX records for `archc infer` to check inputs against."""
    low, high = 1, None
    for lim in graph.axis_limits.get(base, ()):
        if "[" in lim.axis:
            continue  # a negative-start slice: its length is not base minus a constant
        cut = _cut(lim.axis)
        low = max(low, lim.low + cut)
        if isinstance(lim.high, int):
            high = lim.high + cut if high is None else min(high, lim.high + cut)
    return low, high


def recorded(graph: Graph) -> dict:
    """archc.bounds: each bounded symbol's range and the layers that set it, each int64 input's vocab."""
    axes = {}
    for base, limits in graph.axis_limits.items():
        low, high = interval(graph, base)
        if low > 1 or high is not None:
            axes[base] = {"min": low, "max": high, "why": "; ".join(f"{lim.where}: {lim.why}" for lim in limits)}
    vocab = {name: v for name, v in graph.vocab.items() if isinstance(v, int)}
    return {"axes": axes, "vocab": vocab}


def check_sizes(graph: Graph) -> tuple[list[tuple[int, dict[str, int]]], dict[str, str]]:
    """(batch, axis sizes) pairs to compare at, each symbol at sizes other than the traced one where the nodes'
    bounds leave room (a position table's max_len, a slice's end); and the symbols their bounds pin, with why."""
    first: dict[str, int] = {}
    second: dict[str, int] = {}
    pinned: dict[str, str] = {}
    for name, traced in graph.sizes.items():
        limits = graph.axis_limits.get(name, [])
        edges = candidates(limits, traced)  # where the bounds leave room when the sizes near `traced` do not fit
        ok = [n for n in (traced - 1, traced + 2, *edges) if n != traced and fits(graph, name, n)]
        if not ok:
            first[name] = second[name] = traced
            pinned[name] = "; ".join(f"{lim.where}: {lim.why}" for lim in limits) or "its bounds"
            continue
        # one smaller and one larger than the traced size where the bounds allow: as today without bounds
        first[name] = ok[0]
        second[name] = next((n for n in (traced + 3, traced + 2, traced + 1, traced - 2, *edges)
                             if n not in (traced, first[name]) and fits(graph, name, n)), first[name])
    return [(CHECK_BATCHES[0], first), (CHECK_BATCHES[1], second)], pinned


def affordable(checks: list[tuple[int, dict[str, int]]], graph: Graph) -> list[tuple[int, dict[str, int]]]:
    """The parity checks, with symbolic axes shortened when running them would cost more than PARITY_FLOPS.

    At GPT-2 size the checks at seq 127 and 131 (traced at 128) were 2/3 of `archc build`: torch and ONNX Runtime
    each ran 520 tokens through 124M parameters. Any size other than the traced one exposes a shape the trace
    baked in, so the axes are divided by the same factor, kept apart from each other and from the traced size;
    the batch sizes and the tolerance stay."""
    per_example = graph.total_flops  # at the traced (typical) sizes
    cost = sum(batch * per_example for batch, _ in checks)
    if cost <= PARITY_FLOPS or not graph.sizes:
        return checks
    factor = math.ceil(cost / PARITY_FLOPS)
    out = [(batch, dict(sizes)) for batch, sizes in checks]
    for k, traced in graph.sizes.items():
        if any(sizes[k] == traced for _, sizes in checks):  # pinned by its bounds: stays at the traced size
            continue
        seen = {traced}
        for _, small in out:  # the two checks' sizes differ from each other and from the trace, within bounds
            n = max(2, small[k] // factor)
            # the first new size from n up that fits: n or just above it, else a bound's edge (validate runs this
            # too: no walk one size at a time up to a bound millions away); none shorter: check_sizes' own
            tries = sorted(p for p in {n, n + 1, n + 2, n + 3, *candidates(graph.axis_limits.get(k, []), n)} if p >= n)
            small[k] = next((p for p in tries if p < small[k] and p not in seen and fits(graph, k, p)), small[k])
            seen.add(small[k])
    return out


def export_runs(graph: Graph) -> list[tuple[int, dict[str, int], str]]:
    """Every (batch, axis sizes) the export runs the model at, with what runs it: the trace, then each parity
    check (as `affordable` shortens them). `validate` estimates memory at these; the export uses the same."""
    runs = [(TRACE_BATCH, dict(graph.sizes), TRACE)]
    return runs + [(batch, sizes, "the export's parity check") for batch, sizes in
                   affordable(check_sizes(graph)[0], graph)]
