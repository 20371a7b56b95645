"""A model's memory needs as figures (the weights, training per rank, the export's checks) and the refusals `archc
build` and `archc train` make, before anything is allocated, when the memory the run uses cannot hold them. `archc
validate` only reports them (a 7B-parameter spec validates anywhere); ARCHC_MEMORY_LIMIT (bytes) stands in for that
memory. This module owns every figure and refusal: archc.memory words validate's report from them, archc.pipeline
(the build) and archc.train.api (before a run starts, knowing its ranks and device) refuse on them.

Training, per rank, for the recipe's [train] strategy over N ranks (`training`):
  weights      every parameter in float32 (the optimizer's master copy, whatever autocast computes in)
  gradients    one float32 per parameter; DDP over several ranks also keeps them in its reducer's buckets (a copy)
  optimizer    AdamW / Adam: two moments (8 bytes a parameter); SGD with momentum: one (4); plain SGD: none
  activations  an estimate: every node's output (and its `act`'s) at the rank's share of the batch, symbolic axes at
               their [axes] size, kept for the backward pass; with activation_checkpointing, only each block's
               output is kept and one block's activations at a time are recomputed
FSDP2 (strategy = "fsdp") shards weights, gradients and optimizer state over the ranks; DDP keeps a full copy of each
on every rank. Not counted: the framework itself (torch's own few hundred MB), FSDP's gathered copy of the block being
computed, an op's scratch (attention's scores where the kernel keeps them), loader workers and allocator slack.
Training is refused (`check_training`) where the run's ranks would not fit: on CUDA each rank's figure against its
GPU's memory, on the CPU the ranks on this machine together against its memory.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, TYPE_CHECKING

from archc.errors import ArchcError, SpecError, raise_all
from archc.graph.bounds import TRACE, export_runs
from archc.graph.ir import Graph, Node
from archc.graph.units import block_nodes
from archc.ops.base import Dim, Op, TensorType
from archc.ops.sequence import size_of

if TYPE_CHECKING:
    from archc.language.model import Train

BYTES = {"float32": 4, "int64": 8}
OVERRIDE = "ARCHC_MEMORY_LIMIT=BYTES overrides this machine's memory"
# optimizer state per parameter, in float32 copies of the weights: Adam's and AdamW's two moments, SGD's momentum
OPTIMIZER_COPIES = {"adam": 2, "adamw": 2, "sgd": 1}  # state tensors per parameter (SGD's: its momentum buffer)


def optimizer_copies(optimizer: Any) -> int:
    """Copies of the weights an optimizer ([train] optimizer) keeps as state: AdamW's two moments, SGD's momentum
    buffer (none without momentum). The one rule for validate's figures, the refusals and the per-rank report."""
    if optimizer.name == "sgd" and not optimizer.momentum:
        return 0
    return OPTIMIZER_COPIES.get(optimizer.name, 1)


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


@dataclass
class Training:
    """Training memory per rank, in bytes: `training` computes it for a recipe over a number of ranks."""

    strategy: str
    ranks: int
    batch_per_rank: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    per_example: int  # activations of one example
    buckets: int = 0  # DDP's reducer buckets over several ranks: another copy of the gradients

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.buckets + self.optimizer + self.activations

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"total": self.total}

    def line(self, optimizer: str) -> str:
        """'training memory per rank (fsdp over 2 ranks, 32 examples a batch): weights 1.0 MiB + ...'."""
        share = f"{self.strategy} over {self.ranks} ranks" if self.ranks > 1 else f"{self.strategy}, one process"
        hint = " (fsdp shards the first three over --nproc ranks)" if self.strategy == "fsdp" and self.ranks == 1 \
            else ""
        buckets = f" + ddp buckets {human_bytes(self.buckets)}" if self.buckets else ""
        return (f"training memory per rank ({share}, {self.batch_per_rank} examples a batch): weights "
                f"{human_bytes(self.weights)} + gradients {human_bytes(self.gradients)}{buckets} + {optimizer} state "
                f"{human_bytes(self.optimizer)} + activations ~{human_bytes(self.activations)} = "
                f"~{human_bytes(self.total)}{hint}")


def _held(node: Node, sizes: dict[str, int]) -> int:
    """Bytes per example a node's output (and its activation's) holds."""
    if node.out is None:
        return 0
    return node.out.numel(sizes) * BYTES.get(node.out.dtype, 4) * (2 if node.act is not None else 1)


def activation_bytes(graph: Graph, checkpointing: bool = False) -> int:
    """Bytes per example kept for the backward pass (every node's output and its act's; with activation
    checkpointing, each block's output and one block's activations)."""
    tensors, _ = node_tensors(graph)
    every = sum(t.numel(graph.sizes) * BYTES.get(t.dtype, 4) * (2 if act else 1) * k
                for (t, act), k in tensors.items())
    if not checkpointing:
        return every
    blocks = block_nodes(graph)
    inside = [sum(_held(n, graph.sizes) for n in nodes) for nodes in blocks.values()]
    outputs = sum(_held(nodes[-1], graph.sizes) for nodes in blocks.values())
    return every - sum(inside) + outputs + max(inside, default=0)


def training(graph: Graph, recipe: "Train", ranks: int = 1) -> Training:
    """Per-rank memory of training `graph` with `recipe` ([train]) over `ranks` processes (the module's docstring)."""
    params = graph.total_params
    shards = ranks if recipe.strategy == "fsdp" else 1
    per_rank = -(-recipe.batch_size // ranks)
    per_example = activation_bytes(graph, recipe.activation_checkpointing)
    weights = -(-params * 4 // shards)
    buckets = weights if recipe.strategy == "ddp" and ranks > 1 else 0
    return Training(recipe.strategy, ranks, per_rank, weights, weights,
                    -(-params * 4 * optimizer_copies(recipe.optimizer) // shards), per_example * per_rank,
                    per_example, buckets)


def training_refusals(graph: Graph, recipe: "Train", ranks: int = 1, here: int | None = None,
                      device_memory: int | None = None) -> list[ArchcError]:
    """What `archc train` refuses before allocating: `ranks` ranks in all, `here` of them on this machine (default
    all); `device_memory`: the bytes of the GPU each rank trains on (None: the CPU, whose memory the ranks here
    share). ARCHC_MEMORY_LIMIT replaces whichever memory is compared with. The build's own refusals (the weights, the
    export's checks: graph.memory) come first."""
    if graph.memory is not None and graph.memory.build:
        return list(graph.memory.build)
    m = training(graph, recipe, ranks)
    here = ranks if here is None else min(here, ranks)
    env = os.environ.get("ARCHC_MEMORY_LIMIT")
    if device_memory is not None:
        limit, sharing, where_ = (memory_limit() if env else device_memory), 1, "the GPU's memory"
    else:
        limit, sharing, where_ = memory_limit(), here, "memory"
    times = f"{sharing} ranks x " if sharing > 1 else ""
    per = " per rank" if ranks > 1 else ""
    batch = (f"batch {m.batch_per_rank}" if ranks == 1 else f"{m.batch_per_rank} examples per rank (batch "
             f"{recipe.batch_size} over {ranks} ranks)")
    shown = f"{human_bytes(limit)}" + (f", shared by the {sharing} ranks on this machine" if sharing > 1 else "")
    fsdp = ", or strategy = \"fsdp\" (it shards the weights, gradients and optimizer state)" \
        if recipe.strategy == "ddp" and ranks > 1 else ""
    override = OVERRIDE if device_memory is None else OVERRIDE.replace("this machine's", "the GPU's")
    hint = f"reduce the batch size or the layer sizes{fsdp}, or {override}"
    if m.activations * sharing > limit:
        return [SpecError(f"expected activations that fit in {where_} ({shown}), received {times}"
                          f"{human_bytes(m.per_example)} per example x {batch} = "
                          f"{human_bytes(m.activations * sharing)}", where="train.batch_size", hint=hint)]
    if m.total * sharing > limit:
        state = f", optimizer state {human_bytes(m.optimizer)} ({recipe.optimizer.name})" if m.optimizer else ""
        buckets = f", DDP's gradient buckets {human_bytes(m.buckets)}" if m.buckets else ""
        sharded = f" ({recipe.strategy}: sharded over {ranks} ranks)" if recipe.strategy == "fsdp" and ranks > 1 \
            else ""
        return [SpecError(f"expected training to fit in {where_} ({shown}), received {times}{human_bytes(m.total)}"
                          f"{per}: weights and gradients {human_bytes(m.weights + m.gradients)}{sharded}{buckets}"
                          f"{state}, activations {human_bytes(m.per_example)} per example x {batch}",
                          where="train.batch_size" if m.activations > m.weights else "layers", hint=hint)]
    return []


def check_training(graph: Graph, recipe: "Train", ranks: int = 1, here: int | None = None,
                   device_memory: int | None = None, file: str = "") -> None:
    """Refuse, before anything is allocated, a run `archc train` would run out of memory on (training_refusals)."""
    raise_all([e.located(file) if file else e for e in training_refusals(graph, recipe, ranks, here, device_memory)])


@dataclass
class Memory:
    """What a model needs, in bytes, against `limit` (this machine's memory); `build` holds the refusals of `archc
    build` (empty: it fits). Training's figures are per rank and per run: `training`."""

    limit: int
    weights: int                    # float32 parameters
    export: int                     # the export's largest run (trace or parity check)
    export_run: str                 # which run that is: "the export's trace at batch 2, seq 128"
    build: list[ArchcError] = field(default_factory=list)   # what `archc build` (and so `archc train`) refuses

    def lines(self) -> list[str]:
        """validate's figures, then a warning per need this machine cannot hold."""
        out = [f"memory: weights {human_bytes(self.weights)} (float32); export's checks {human_bytes(self.export)} "
               f"at most ({self.export_run})"]
        return out + [warning(e, "`archc build` and `archc train`") for e in self.build]

    def as_json(self) -> dict:
        return {"limit": self.limit, "weights": self.weights, "export": self.export, "export_run": self.export_run,
                "fits_build": not self.build}


def warning(e: ArchcError, who: str) -> str:
    """validate's line for a refusal it only reports."""
    return f"warning: {e.where}: {e.message} ({who} would refuse it; {OVERRIDE})"


def needs(graph: Graph, given: set[str] = frozenset()) -> Memory:  # type: ignore[assignment]
    """The model's weights and the export's checks, and the errors `archc build` raises on them; `given`: the axes
    the spec sizes in [axes] (where errors point). Computed from shapes: nothing is allocated."""
    limit = memory_limit()
    weights = graph.total_params * 4
    tensors, users = node_tensors(graph)
    export, run, export_error = _export_peak(graph, limit, given, weights, tensors, users)
    build: list[ArchcError] = []
    if weights > limit:
        big = max(graph.nodes, key=lambda n: n.num_params)
        build.append(SpecError(f"expected a model that fits in memory ({human_bytes(limit)}), received "
                               f"{_count(graph.total_params)} parameters needing {human_bytes(weights)} as float32",
                               where="layers", hint=f"the largest layer is {big.where} with {_count(big.num_params)} "
                                                    f"parameters; reduce layer sizes, or {OVERRIDE}"))
    elif export_error is not None:
        build.append(export_error)
    return Memory(limit, weights, export, run, build)


def check_fits(graph: Graph, file: str = "") -> None:
    """Refuse, before anything is allocated, a model `archc build` would run out of memory on: the figures infer
    computed (graph.memory; none for a graph inferred without its spec). Training: check_training."""
    if graph.memory is not None:
        raise_all([e.located(file) if file else e for e in graph.memory.build])


# What the export holds besides one forward's inputs and activations: the weights six times (the torch module, the
# exporter's graph and its initializers, the serialized model, ONNX Runtime's session and its pre-packed copies:
# `archc build specs/zoo/gpt2.toml --no-optimize` grew the peak by 2.42 GiB, 5.2 times its 0.46 GiB of weights), in
# a parity check per output ONNX Runtime's copy plus the float64 comparison with torch's (a float64 copy, the
# difference and its absolute value: 6 float32-sized copies), and what the runtimes hold whatever the model (a
# 2-layer build at 60,000 x 64 values grew the peak by 475 MB against 440 MB of tensors and copies counted).
EXPORT_WEIGHT_COPIES = 6
# From SHARED_FROM bytes of weights on, the export writes the file from the module's tensors and ONNX Runtime's
# checks read those tensors in place (archc.export.stream), the KV-cache file too: the module's copy, plus one for
# transient copies (the largest weight transposed in a check's run) and headroom (Qwen2-0.5B, 1.84 GiB of weights:
# `archc build`, model and KV-cache files, peaked at 2.25 GiB, 1.22 times, /usr/bin/time -v, 2026-12-06).
SHARED_FROM = 64 * 2**20
SHARED_WEIGHT_COPIES = 2
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
    `weights` (bytes) and `tensors` (node_tensors' count of node outputs) save walking the nodes again."""
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
    copies = EXPORT_WEIGHT_COPIES if weights < SHARED_FROM else SHARED_WEIGHT_COPIES
    return (EXPORT_OVERHEAD + weights * copies + sum(size(t) for t in graph.inputs.values()) + acts
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


def _export_peak(graph: Graph, limit: int, given: set[str], weights: int, tensors: Counter,
                 users: list[Node]) -> tuple[int, str, SpecError | None]:
    """The export's largest run (bytes, and which run) and the error for the first run that does not fit in `limit`:
    the export traces the model at a batch of 2 at the typical sizes and checks it at batches 1 and 3 near them
    (graph.bounds)."""
    peak, peak_run, error = 0, "", None
    for batch, sizes, what in export_runs(graph):
        need = export_bytes(graph, batch, sizes, what != TRACE, weights, tensors, users)
        shown = "".join(f", {k} {v:,}" for k, v in sizes.items())
        if need > peak:
            peak, peak_run = need, f"{what} at batch {batch}{shown}"
        if need <= limit or error is not None:
            continue
        error = _export_error(graph, limit, given, need, f"{what} at batch {batch}{shown}", sizes, what)
    return peak, peak_run, error


def _export_error(graph: Graph, limit: int, given: set[str], need: int, run: str, sizes: dict[str, int],
                  what: str) -> SpecError:
    """The export's run `run` needs `need` bytes, more than `limit`: the error, at the axis or tensor to shrink."""
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
    return SpecError(f"expected the export's checks to fit in memory ({human_bytes(limit)}), received "
                     f"{human_bytes(need)} for {run} ({parts})", where=where, hint=f"{hint}; or {OVERRIDE}")
