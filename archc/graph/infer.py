"""The infer pass: shapes, dtypes, parameter shapes and FLOPs for every node, plus whole-model checks."""
from __future__ import annotations

import os
from pathlib import Path
from collections import Counter

from archc.errors import ArchcError, SpecError, raise_all
from archc.graph.bounds import TRACE, Collector, base_axis, check as check_bounds, export_runs
from archc.graph.ir import Graph, Node
from archc.graph.located import InternalError
from archc.ops.base import BATCH, Dim, Op, TensorType
from archc.ops.sequence import size_of
from archc.language.errors import at
from archc.language.model import Spec
from archc.tasks import REGISTRY as TASKS
from archc.tasks.base import task_class, task_output

DEFAULT_AXIS_SIZE = 32  # a symbolic axis without an [axes] entry is estimated at this size
BYTES = {"float32": 4, "int64": 8}


def infer(graph: Graph, spec: Spec | None = None, root: Path | None = None) -> Graph:
    """Fill in every node's output type, parameters and FLOPs, and collect what the nodes index; ShapeErrors
    are located at spec paths. Then [axes] sizes and input vocabularies are checked against those bounds."""
    given = dict(graph.sizes)  # the spec's [axes]; the others get a default (inside the bounds)
    symbols = _symbols(graph)
    sizes = {**symbols, **graph.sizes}
    graph.sizes = sizes
    collector = Collector(graph)
    types: dict[str, TensorType | None] = dict(graph.inputs)
    errors: list[ArchcError] = []
    batch_stats: Node | None = None  # the first node that cannot train on a batch of one example
    named = {base_axis(d) for d in symbols}  # symbols of the inputs and vocabularies; the nodes add theirs (a pool's)
    for node in graph.nodes:
        ins = [types.get(i) for i in node.inputs]
        if any(t is None for t in ins):  # an input failed already: one report per problem
            types[node.id] = None
            continue
        try:
            infer_node(graph, node, ins, sizes)  # type: ignore[arg-type]
            collector.add(node, ins)  # type: ignore[arg-type]
            if batch_stats is None and node.op.batch_statistics(ins):  # type: ignore[arg-type]
                batch_stats = node
            named.update(d for d in node.out.shape if isinstance(d, str) and d not in named)  # type: ignore[union-attr]
        except ArchcError as e:
            received = ", ".join(f"{src} {t.show()}" for src, t in zip(node.inputs, ins))  # type: ignore[union-attr]
            on_act = node.act is not None and e.where == "act"
            e.where = at(node.where, f".{e.where}") if e.where else node.where
            name = node.act.name() if on_act else node.op.name()  # type: ignore[union-attr]
            e.message = f"{name}: {e.message}" + (f" (input: {received})" if len(ins) == 1 and not on_act else "")
            errors.append(e)
            types[node.id] = None
            continue
        except Exception as e:  # an op's own rule crashed: a bug in archc, reported at the node that hit it
            raise InternalError(e, node.where, node.op.name()) from e
        types[node.id] = node.out
    raise_all(errors)
    raise_all([_unused_axis(name, named) for name in given if name not in named])
    raise_all(check_bounds(graph, given))
    if spec is not None:
        if spec.train.batch_size == 1 and batch_stats is not None:
            raise SpecError(f"expected a batch size of at least 2 with {batch_stats.op.name()} at {batch_stats.where} "
                            "(it normalizes each channel over the batch), received 1", where="train.batch_size",
                            hint="raise the batch size, or use layernorm, which normalizes each example")
        check_task(graph, spec, root)
        check_memory(graph, spec.train.batch_size, set(given))
    check_inputs_read(graph)
    return graph


def _unused_axis(name: str, named: set[str]) -> SpecError:
    """An [axes] entry no input or layer has: a misspelt symbol would leave the real one at its default size."""
    from archc.language.errors import close_matches  # as expand does: spec.errors imports the op registry
    symbols = sorted({base_axis(d) for d in named} - {BATCH})
    return SpecError(f"expected a symbolic axis of an input or a layer, received '{name}', which none has",
                     where=f"axes.{name}", hint=close_matches(name, set(symbols)) or
                     f"symbolic axes: {', '.join(symbols) or 'none'}")


def check_inputs_read(graph: Graph) -> None:
    """Every input reaches an output. The exporter drops one that does not (no layer reads it, or only a branch
    that feeds no output) from the ONNX graph, which then refuses the feed every caller gives (`archc infer`, the
    parity check): a wiring mistake, found last so that other errors come first."""
    live = set(graph.outputs.values())
    readers_of: dict[str, list[str]] = {name: [] for name in graph.inputs}  # one walk: not one per input
    for node in reversed(graph.nodes):  # nodes are in topological order: what the outputs depend on
        if node.id in live:
            live.update(node.inputs)
        for i in dict.fromkeys(node.inputs):
            if i in readers_of:
                readers_of[i].append(node.id)
    errors: list[ArchcError] = []
    for name in graph.inputs:
        readers = readers_of[name][::-1]
        if not readers:
            errors.append(SpecError(f"input '{name}' is read by no layer", where=f"inputs.{name}",
                                    hint=f"wire it with from = \"{name}\", or remove it"))
        elif name not in live:
            errors.append(SpecError(f"input '{name}' reaches no output", where=f"inputs.{name}",
                                    hint=f"the layers reading it ({', '.join(readers[:3])}) feed no output: wire "
                                         "their branch in, or name its last layer in outputs"))
    raise_all(errors)


def infer_node(graph: Graph, node: Node, ins: list[TensorType], sizes: dict[str, int]) -> None:
    """One node: output type (the activation checked on it), parameter shapes and count, FLOPs."""
    node.out = node.op.infer_tied(ins, graph.node(node.tied).params) if node.tied else node.op.infer(ins)
    if node.act is not None:
        try:
            node.act.infer([node.out])
        except ArchcError as e:
            e.where = "act"  # the layer's `act` sugar, not the layer itself, is at fault
            raise
    node.params = node.op.param_shapes(ins)
    node.num_params = node.op.num_params(ins)
    node.flops = node.op.flops(ins, node.out, sizes) + (node.act.flops([node.out], node.out, sizes) if node.act else 0)


def _symbols(graph: Graph) -> dict[str, int]:
    """Default sizes of the symbolic axes of inputs, and of axes named only as an int64 input's range."""
    names = [d for t in graph.inputs.values() for d in t.features if isinstance(d, str)]
    names += [v for v in graph.vocab.values() if isinstance(v, str)]
    return {d: DEFAULT_AXIS_SIZE for d in names}


def check_task(graph: Graph, spec: Spec, root: Path | None = None) -> None:
    """The rule of the spec's task kind (archc.tasks), the one `archc train` applies too. A bare architecture
    (no [task], [train] or [data]) declares no task: only its task output must exist."""
    if {"task", "train", "data"} & spec.model_fields_set:
        task_class(spec.task.kind).validate(graph, spec)
        if spec.data is not None:
            check_source(spec, graph, root)
        if {"train", "data"} & spec.model_fields_set and not TASKS[spec.task.kind].own_inputs:
            check_single_input(graph)
            (name, only), = graph.inputs.items()
            if spec.data is not None and spec.data.normalize and only.dtype != "float32":
                raise SpecError(f"expected normalize = false for the {only.dtype} input '{name}' (it standardizes "
                                "float features), received true", where="data.normalize",
                                hint="token or class ids are not normalized")
    else:
        task_output(graph, spec)


def check_source(spec: Spec, graph: Graph, root: Path | None = None) -> None:
    """The [data] source as `archc train` would load it, without reading anything: the scheme, its options (the
    `target` included), the named argument, the task it feeds, for a tabular input a columns reader, and the token
    ids it draws against the model (a named tokenizer.json is read: its vocabulary)."""
    from archc.data.sources import checked, located_options  # here: archc.data imports numpy (other specs never do)
    data = spec.data
    assert data is not None
    try:
        cls, _, opts = checked(data.source, task=TASKS[spec.task.kind].data_task, target=data.target,
                               tabular=next(iter(graph.columns), None), root=root)
        drawn = cls.vocab(located_options(cls, opts, root), data.source)  # a tokenizer's: its file is read
    except ArchcError as e:
        raise SpecError(e.message if not e.where or e.where in (data.source, "data") else f"{e.where}: {e.message}",
                        where="data.source", hint=e.hint) from None
    task_class(spec.task.kind).check_vocab(graph, spec, drawn)


def check_single_input(graph: Graph, file: str = "") -> None:
    """Task kinds without their own inputs train one input with a batch axis (validate checks it for a spec with
    [train] or [data], `archc train` for any)."""
    own = tuple(kind for kind, task in TASKS.items() if task.own_inputs)
    if len(graph.inputs) != 1:
        raise SpecError(f"training needs a single-input spec for now, received {len(graph.inputs)} inputs "
                        f"({', '.join(graph.inputs)})", where="inputs", file=file,
                        hint=f"task kinds {', '.join(own)} feed several inputs")
    only = next(iter(graph.inputs.values()))
    if not only.shape or only.shape[0] != BATCH:
        raise SpecError(f"training needs an input with a batch axis, received {only.show()}", where="inputs",
                        file=file, hint=f"task kinds {', '.join(own)} feed their own inputs (e.g. whole graphs)")


def memory_limit() -> int:
    """Bytes a model may need: ARCHC_MEMORY_LIMIT (for tests) or this machine's physical memory."""
    env = os.environ.get("ARCHC_MEMORY_LIMIT")
    if env:
        try:
            return int(float(env))
        except (ValueError, OverflowError):  # "8GiB", "inf": say so instead of a traceback
            raise ArchcError(f"expected a number of bytes, received {env!r}", where="ARCHC_MEMORY_LIMIT",
                             hint="e.g. ARCHC_MEMORY_LIMIT=8e9", file="environment") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 64 * 2**30


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    if n >= 1024**6:  # absurd sizes (a typo like shape = [10**9, 10**9]): no 30-digit numbers, no float overflow
        pib = n // 1024**5
        return f"{pib:.1e} PiB" if pib.bit_length() < 1000 else f"over 2^{n.bit_length() - 1} B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f}"


def _count(n: int) -> str:
    """A parameter count: 1,234,567, or 7.9e+32 when it is absurdly large."""
    if n < 10**15:
        return f"{n:,}"
    return f"{n:.1e}" if n.bit_length() < 1000 else f"over 2^{n.bit_length() - 1}"


def check_memory(graph: Graph, batch_size: int, given: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Refuse, before anything is allocated, a model whose weights or activations cannot fit in memory, in training
    (at `batch_size`) or in the export's checks; `given`: the axes the spec sizes in [axes] (where errors point)."""
    limit = memory_limit()
    weights = graph.total_params * 4
    if weights > limit:
        big = max(graph.nodes, key=lambda n: n.num_params)
        raise SpecError(f"expected a model that fits in memory ({human_bytes(limit)}), received "
                        f"{_count(graph.total_params)} parameters needing {human_bytes(weights)} as float32",
                        where="layers", hint=f"the largest layer is {big.where} with {_count(big.num_params)} "
                                             "parameters; reduce layer sizes")
    tensors, users = node_tensors(graph)
    acts = sum(t.numel(graph.sizes) * BYTES.get(t.dtype, 4) * k for (t, _), k in tensors.items())
    if acts * batch_size > limit:
        raise SpecError(f"expected activations that fit in memory ({human_bytes(limit)}), received "
                        f"{human_bytes(acts)} per example x batch {batch_size} = {human_bytes(acts * batch_size)}",
                        where="train.batch_size", hint="reduce the batch size or the layer sizes")
    check_export_memory(graph, limit, given, weights, tensors, users)


# What the export holds besides one forward's inputs and activations: the weights six times (the torch module, the
# exporter's graph and its initializers, the serialized model, ONNX Runtime's session and its pre-packed copies:
# `archc build specs/zoo/gpt2.toml --no-optimize` grew the peak by 2.42 GiB, 5.2 times its 0.46 GiB of weights), in
# a parity check per output ONNX Runtime's copy plus the float64 comparison with torch's (a float64 copy, the
# difference and its absolute value: 6 float32-sized copies), and what the runtimes hold whatever the model (a
# 2-layer build at 60,000 x 64 values grew the peak by 475 MB against 440 MB of tensors and copies counted).
EXPORT_WEIGHT_COPIES = 6
COMPARED_OUTPUT_COPIES = 7
EXPORT_OVERHEAD = 256 * 2**20
# An op's scratch (Op.scratch: attention's scores) as ONNX Runtime and torch's trace hold it: the scores, their
# softmax and a scaled or masked copy (attention at seq 2048 x 16 heads: `archc build` peaked at 2.5 GB where the
# scores at batch 3 are 0.8 GB and everything else counted 0.3 GB). One node's scratch is live at a time.
SCRATCH_COPIES = 3


def node_tensors(graph: Graph) -> tuple[Counter, list[Node]]:
    """Every node's output type, counted (with whether an `act` adds a second tensor), and the nodes that hold a
    scratch tensor (Op.scratch): one walk over the nodes."""
    tensors: Counter = Counter()
    users = []
    for n in graph.nodes:
        if n.out:
            tensors[(n.out, n.act is not None)] += 1
            if type(n.op).scratch is not Op.scratch:
                users.append(n)
    return tensors, users


def export_bytes(graph: Graph, batch: int, sizes: dict[str, int], compared: bool = True,
                 weights: int | None = None, tensors: Counter | None = None, users: list[Node] | None = None) -> int:
    """Bytes the export's run at this batch and these axis sizes holds at most: inputs, every node's output (and its
    `act`'s), the weights' copies and, when `compared` (a parity check), the outputs' comparison copies.
    `weights` (bytes) and `tensors` (check_memory's count of node outputs) save walking the nodes again."""
    def size(t: TensorType) -> int:
        n = (batch if t.batched else 1) * BYTES.get(t.dtype, 4)
        for d in t.features:
            n *= _dim_size(d, sizes)
        return n

    weights = graph.total_params * 4 if weights is None else weights
    if tensors is None or users is None:
        tensors, users = node_tensors(graph)
    acts = sum(size(t) * (2 if act else 1) * k for (t, act), k in tensors.items())
    outs = sum(size(graph.type_of(v)) for v in graph.outputs.values()) * COMPARED_OUTPUT_COPIES * compared
    return (EXPORT_OVERHEAD + weights * EXPORT_WEIGHT_COPIES + sum(size(t) for t in graph.inputs.values()) + acts
            + outs + scratch_bytes(graph, users, batch, sizes))


def scratch_bytes(graph: Graph, users: list[Node], batch: int, sizes: dict[str, int]) -> int:
    """The largest scratch (Op.scratch) of `users` at this batch and these axis sizes, in float32 copies held."""
    most = max((n.op.scratch([graph.type_of(i) for i in n.inputs], lambda d: _dim_size(d, sizes)) for n in users),
               default=0)
    return most * batch * 4 * SCRATCH_COPIES


def _dim_size(d: Dim, sizes: dict[str, int]) -> int:
    """A dimension's size at these axis sizes (a derived axis such as 'seq-1' included; an unsized symbol: 1)."""
    s = size_of(d, sizes)
    return s if s is not None else sizes.get(base_axis(d), 1) if isinstance(d, str) else d


def check_export_memory(graph: Graph, limit: int, given: set[str], weights: int, tensors: Counter,
                        users: list[Node]) -> None:
    """Refuse axis sizes at which `archc build` (or train's export) could not trace and check the model in memory:
    the export runs it at a batch of 2 at the typical sizes and at batches 1 and 3 near them (graph.bounds)."""
    for batch, sizes, what in export_runs(graph):
        need = export_bytes(graph, batch, sizes, what != TRACE, weights, tensors, users)
        if need <= limit:
            continue
        shown = "".join(f", {k} {v:,}" for k, v in sizes.items())
        largest = max(sizes, key=lambda k: (k in given, sizes[k]), default=None)
        if largest in given:
            where, hint = f"axes.{largest}", f"lower [axes] {largest}: the export traces at it and checks near it"
        elif largest is not None:
            holder = next((n for n, t in graph.inputs.items() if largest in t.features), None)
            where = f"inputs.{holder}" if holder else "inputs"
            hint = (f"no [axes] {largest}: archc chose {sizes[largest]:,} inside the bounds the layers put on it; "
                    "lower those or the layer sizes")
        else:  # fixed shapes only: point at the largest tensor (an error path: walking the nodes again is fine)
            by_size = [(t.numel(sizes), 1, f"inputs.{name}") for name, t in graph.inputs.items()]  # inputs first
            by_size += [(n.out.numel(sizes), 0, n.where) for n in graph.nodes if n.out]
            where = max(by_size)[2]
            hint = "reduce the input's or the layers' sizes: the export runs the model at batches of 2 and 3"
        parts = "inputs, activations, weights" + (", outputs compared" if what != TRACE else "")
        raise SpecError(f"expected the export's checks to fit in memory ({human_bytes(limit)}), received "
                        f"{human_bytes(need)} for {what} at batch {batch}{shown} ({parts})", where=where, hint=hint)
