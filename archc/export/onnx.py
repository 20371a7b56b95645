"""Export a lowered module to one self-contained ONNX file, with metadata, checked against ONNX Runtime.

Exporter: archc's emitter by default (`exporter="emit"`, archc.emit: each op writes its ONNX through its `emit`
hook, from the compiled graph and the module's state_dict; torch.onnx is not imported). The fallback, for one
release, is torch.onnx's TorchScript path (`"torchscript"`, dynamo=False: a trace, then attach_weights and
export.annotate restore the state_dict's names and the spec's ids and shapes); `"dynamo"` is torch.onnx's newer
exporter (3.5 s against 0.19 s on the digit classifier). Whichever writes the graph, the torch module is the
oracle: the file is written to a temporary path, parity-checked, then renamed: a failed export leaves nothing.
The steps are passes over one ExportContext (restore ... write, below), listed and run by archc.export.passes.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

import archc.metadata as keys
from archc.version import __version__
from archc.compiled import Compiled
from archc.errors import ExportError
from archc.export.context import Phases
from archc.export.fronts import ATOL, RTOL  # noqa: F401  (the tolerance of every parity check; tests import it here)
# the sizes the export traces and checks at are validate's too (its memory check): archc/graph/bounds.py
from archc.graph.bounds import CHECK_BATCHES, PARITY_FLOPS, TRACE_BATCH, affordable, check_sizes, recorded  # noqa: F401
from archc.graph.ir import Graph
from archc.graph.memory import SHARED_FROM
from archc.language.model import Spec
from archc.metadata import Facts
from archc.tasks import REGISTRY, task_class

OPSET = 18
# The default first (archc.clihelp.EXPORTER_NAMES spells them for the command line). "emit" (issue 23): archc writes
# the graph itself, each op through its `emit` hook (archc.emit), at archc.emit.graph.OPSET, and torch.onnx is never
# imported; "torchscript" (the fallback for one release) and "dynamo" trace the module with torch.onnx at OPSET.
# Parity against the torch module is checked the same way whichever wrote the graph.
EXPORTERS = ("emit", "torchscript", "dynamo")
DEFAULT_EXPORTER = EXPORTERS[0]
# On a busy machine torch runs the trace and the parity references on fewer threads (archc.threads): its OpenMP
# workers spin while they wait, and on a shared 2-core machine (load ~10) a GPT-2 forward took 0.8-2.8 s on 2 threads
# against 0.3-0.4 s on one (benchmarks/bench_export_zoo.py). ONNX Runtime keeps its own either way.
EXTERNAL_DATA_BYTES = 2**31 - 2**26  # weights from here on go to a side file: protobuf's limit is 2 GiB per message
# From SHARED_FROM bytes of weights on (archc.graph.memory, which counts on it), the checks do not hold a serialized
# model: ONNX Runtime reads the module's tensors themselves (archc.export.stream), so a build's peak stays near the
# weights' bytes; below it the model's bytes are held (cheap), for the passes that rewrite them (a variant pass, and
# the optimizer, whose memory budget is the same 64 MiB).


@dataclass
class ExportReport:
    path: str
    exporter: str
    seconds: float
    max_abs_diff: float
    tolerance: float
    checks: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0  # the file's, plus its external data's
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase: trace, weights, ..., parity
    data_path: str | None = None  # the external data file, when the weights exceed EXTERNAL_DATA_BYTES
    pinned: dict[str, str] = field(default_factory=dict)  # symbols checked only at the traced size, and why
    optimized: Any = None  # archc.export.optimize.Decision when the export was asked to optimize, else None
    row: dict[str, Any] | None = None  # a model that takes a row (export.tabular): its columns and parity
    pixels: dict[str, Any] | None = None  # a model that takes uint8 pixels (export.pixels): its input and parity


if TYPE_CHECKING:
    import onnx

    from archc.export.context import ExportContext
    from archc.export.optimize import Choice, Decision
    from archc.export.stream import Split

SCORE_TASKS = tuple(kind for kind, cls in REGISTRY.items() if cls.scores)  # kinds whose output holds scores


def output_kind(graph: Graph, name: str, spec: Spec) -> str:
    """What an output holds, as the task kind labels it: logits / probs / log_probs, or plain values."""
    return task_class(spec.task.kind).output_kind(graph, name, spec)


def metadata(graph: Graph, spec: Spec, raw: dict, sha256: str,
             extra: "Facts | dict[str, Any] | None" = None) -> dict[str, str]:
    """The archc.* metadata `archc infer` reads (values are JSON strings; keys: archc.metadata): the spec's, then
    the run's data facts (`extra`: archc.metadata.Facts, or its export.json form); their labels (the class names
    training took from the data) replace the spec's in archc.task."""
    facts = extra if isinstance(extra, Facts) else Facts.from_record(extra)
    outputs = {name: {"shape": list(graph.type_of(nid).shape), "dtype": graph.type_of(nid).dtype,
                      "kind": output_kind(graph, name, spec)} for name, nid in graph.outputs.items()}
    meta = {
        keys.VERSION: __version__,
        keys.SPEC: json.dumps(raw, sort_keys=True),
        keys.SPEC_SHA256: sha256,
        keys.TASK: json.dumps({"kind": spec.task.kind, "labels": facts.labels or spec.task.labels}),
        keys.INPUTS: json.dumps({k: {"shape": list(t.shape), "dtype": t.dtype} for k, t in graph.inputs.items()}),
        keys.OUTPUTS: json.dumps(outputs),
        keys.BOUNDS: json.dumps(recorded(graph)),  # sizes and ids `archc infer` checks inputs against
    }
    return meta | facts.to_metadata()


def example_inputs(graph: Graph, batch: int, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the graph's types at this batch size and these symbolic-axis sizes."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in graph.inputs.items():
        shape = [batch] * t.batched + [d if isinstance(d, int) else sizes[d] for d in t.features]
        vocab = graph.vocab.get(name, 2)
        high = sizes.get(vocab, 1) if isinstance(vocab, str) else vocab  # indices into a symbolic axis
        if t.dtype == "float32":
            out[name] = rng.standard_normal(shape).astype(np.float32)
        else:
            out[name] = rng.integers(0, high, size=shape).astype(np.int64)
            if isinstance(vocab, str):
                _cover(out[name], high, rng)
    return out


def _cover(ids: np.ndarray, high: int, rng: np.random.Generator) -> None:
    """Make every index in [0, high) occur (as far as `ids` holds enough): an axis sized by the data (graphs =
    max(graph id) + 1) then has its declared size, as in a real batch where every graph has nodes."""
    flat = ids.reshape(-1)
    k = min(high, flat.size)
    flat[rng.permutation(flat.size)[:k]] = np.arange(k)


def dynamic_axes(graph: Graph) -> dict[str, dict[int, str]]:
    """Batch and every named axis of every input and output are dynamic, named as in the spec."""
    axes = {name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for name, t in graph.inputs.items()}
    for name, nid in graph.outputs.items():
        axes[name] = {i: d for i, d in enumerate(graph.type_of(nid).shape) if isinstance(d, str)}
    return axes


_Phases = Phases  # parity's phases (archc.export.context)


def _trace_args(graph: Graph) -> tuple:
    import torch

    return tuple(torch.from_numpy(v) for v in example_inputs(graph, TRACE_BATCH, graph.sizes).values())


def _torch_export(module, exported, graph: Graph, tmp: str, exporter: str) -> "onnx.ModelProto":
    """The exported graph, in memory. TorchScript: traced without its weights (export_params=False: they become
    graph inputs named by their state_dict names) and without constant folding, which at GPT-2 size spent
    seconds copying every weight through TorchScript constants and renamed transposed ones `onnx::MatMul_91`;
    `attach_weights` adds them back once, under their parameter names (ONNX Runtime folds the transposes when it
    loads the file). PRESERVE (the module is in eval mode either way) skips the eval peephole, whose
    conv-batchnorm fusion would invent unnamed weights; ONNX Runtime fuses them on load. Dynamo names its
    initializers itself; it writes a file, read back here."""
    import onnx
    import torch

    args, names_in, names_out = _trace_args(graph), list(graph.inputs), list(graph.outputs)
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            buf = io.BytesIO()
            torch.onnx.export(exported, args, buf, input_names=names_in, output_names=names_out,
                              dynamic_axes=dynamic_axes(graph), opset_version=OPSET, dynamo=False,
                              export_params=False, do_constant_folding=False,
                              training=torch.onnx.TrainingMode.PRESERVE)
            return onnx.load_from_string(buf.getvalue())
        shapes = {n: {i: torch.export.Dim.AUTO for i in ax} for n, ax in dynamic_axes(graph).items()
                  if n in graph.inputs}
        program = torch.onnx.export(module, args, input_names=names_in, output_names=names_out,
                                    dynamic_shapes=tuple(shapes[n] for n in names_in), dynamo=True,
                                    opset_version=OPSET, verbose=False)
        program.save(tmp)
    return onnx.load(tmp)


def _for_torchscript(module):
    """The module the TorchScript exporter traces: flat (see export.annotate) when it is archc's GraphModule."""
    from torch import fx

    from archc.export.annotate import flat_module

    return flat_module(module) if isinstance(module, fx.GraphModule) else module


def attach_weights(model: "onnx.ModelProto", exported, module, graph_inputs: list[str]) -> None:
    """Turn the graph inputs that are the exported module's parameters and buffers into initializers named as in
    `module`'s state_dict (what checkpoints and `--weights` use); one copy of each tensor, tied ones once.

    The exporter merges equal-valued weights (a fresh model's batchnorm ones and zeros) into one input read
    through Identity nodes named after the others; those get their own initializer back, so every parameter
    is in the file under its name, as a trained model's would be."""
    from onnx import numpy_helper

    names = {id(t): k for k, t in module.state_dict(keep_vars=True).items()}
    state = {k: t for k, t in exported.state_dict(keep_vars=True).items()}
    copies = [n for n in model.graph.node if n.op_type == "Identity" and n.input[0] in state and n.output[0] in state]
    for n in copies:
        model.graph.node.remove(n)
    weights = [i.name for i in model.graph.input if i.name in state]
    for inp in [i for i in model.graph.input if i.name in state]:
        model.graph.input.remove(inp)
    extra = [i.name for i in model.graph.input if i.name not in graph_inputs]
    assert not extra, f"exported graph inputs {extra} are neither the spec's inputs nor parameters"
    rename = {k: names[id(state[k])] for k in weights + [n.output[0] for n in copies]}
    for n in model.graph.node:
        n.input[:] = [rename.get(v, v) for v in n.input]
    model.graph.initializer.extend(numpy_helper.from_array(state[k].detach().cpu().numpy(), rename[k])
                                   for k in rename)


def parity(module, graph: Graph, path: str | bytes, phases: _Phases | None = None,
           shared: dict[str, np.ndarray] | None = None) -> tuple[float, float, list[dict[str, Any]]]:
    """Run ONNX Runtime (on the file at `path`, or the serialized model) and torch on the same inputs at batch sizes
    other than the traced one (one session for both). `shared`: initializers ONNX Runtime takes from these arrays
    instead of the file (archc.export.stream.pointing)."""
    import torch

    from archc.runtime.session import check_session

    phases = phases if phases is not None else _Phases()
    try:
        with phases("session"):
            sess = check_session(path, len(graph.nodes), shared)  # failures are reported as ExportError
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportError(f"ONNX Runtime cannot load the exported model: {str(e).splitlines()[0][:300]}") from e
    worst, tol, checks = 0.0, 0.0, []
    module.eval()
    for i, (batch, sizes) in enumerate(affordable(check_sizes(graph)[0], graph)):
        feeds = example_inputs(graph, batch, sizes, seed=100 + i)
        with torch.no_grad(), phases("parity torch"):
            ref = module(*(torch.from_numpy(v) for v in feeds.values()))
        refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        try:
            with phases("parity ort"):
                got = sess.run(list(graph.outputs), feeds)
        except Exception as e:
            raise ExportError(f"ONNX Runtime failed at batch {batch} {sizes or ''}: "
                              f"{str(e).splitlines()[0][:300]}") from e
        for name, r, g in zip(graph.outputs, refs, got):
            r = r.detach().numpy()  # a view of a parameter (expand) requires grad even under no_grad
            if r.shape != g.shape:
                raise ExportError(f"output '{name}': expected shape {list(r.shape)} from torch, received "
                                  f"{list(g.shape)} from ONNX Runtime at batch {batch}", where=_where(graph, name))
            if not np.isfinite(r).all():  # NaN would only read "within nan": say where it comes from
                raise ExportError(f"output '{name}' at batch {batch}: expected finite values from torch on the "
                                  f"example inputs, received {int(np.size(r) - np.isfinite(r).sum()):,} nan or inf "
                                  f"of {r.size:,}", where=_where(graph, name),
                                  hint="weights or activations beyond float32's range (large weights, an overflowing "
                                       "exp or pow), or a nan the model computes (log or sqrt of a negative)")
            diff = float(np.max(np.abs(r.astype(np.float64) - g))) if r.size else 0.0
            bound = ATOL + RTOL * (float(np.max(np.abs(r))) if r.size else 0.0)
            checks.append({"output": name, "batch": batch, "sizes": sizes, "max_abs_diff": diff, "tolerance": bound})
            worst, tol = max(worst, diff), max(tol, bound)
            if not diff <= bound:  # also catches NaN
                raise ExportError(f"output '{name}' at batch {batch}: expected ONNX Runtime to match torch "
                                  f"within {bound:.1e}, received a max abs difference of {diff:.3e}",
                                  where=_where(graph, name))
    return worst, tol, checks


def _where(graph: Graph, output: str) -> str:
    """The spec location of the node an output reads (empty for an input passed through)."""
    node = graph.get(graph.outputs[output])
    return node.where if node is not None else ""


def check_arguments(ctx: "ExportContext") -> None:
    """The exporter is one archc knows; the output's folder exists."""
    if ctx.exporter not in EXPORTERS:
        raise ExportError(f"expected exporter {' or '.join(repr(e) for e in EXPORTERS)}, received '{ctx.exporter}'")
    if ctx.path.parent and not ctx.path.parent.exists():
        raise ExportError(f"no such directory: {ctx.path.parent}", where=str(ctx.path))




def in_file(ctx: "ExportContext", body: Callable[[], None]) -> None:
    """Run `body` (the passes that build, check and write the file) with the file's temporary name taken first (a
    read-only folder fails before the trace), an onnx.checker rejection or a full disk reported as one line, and
    every temporary file gone afterwards: a failed export leaves nothing. (archc.export.passes calls it as
    `_export`; tests spy on the threads it runs under.)"""
    import onnx

    import archc.tempfiles as tempfiles
    from archc.util import write_error

    ctx.start = time.perf_counter()
    try:
        ctx.tmp = tempfiles.make(ctx.path)  # removed on SIGTERM and SIGINT too
    except OSError as e:  # name the .onnx asked for
        raise write_error(e, ctx.path) from e
    try:
        body()
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the exported model: {str(e).splitlines()[0]}") from e
    except OSError as e:  # a full disk while saving
        raise write_error(e, ctx.path) from e
    finally:
        tempfiles.remove(ctx.tmp)
        if ctx.tmpdir is not None:
            tempfiles.remove(ctx.tmpdir)


_export = in_file


# ---- the passes (archc.export.passes lists them) ----------------------------------------------------------------
def restore(ctx: "ExportContext") -> None:
    """Standardized targets: the file outputs the targets' units (archc.export.restore)."""
    from archc.export.restore import KEY, restored

    ctx.module = restored(ctx.module, ctx.graph, {KEY: ctx.facts.target_scale})


def emit(ctx: "ExportContext") -> None:
    """The ONNX model in memory, with spec names, shapes and metadata, its weights beside it as arrays
    (archc.export.stream.Split: the module's own tensors for the emitter): the exporter's one call."""
    ctx.module.eval()
    ctx.split = _model_proto(ctx.compiled, ctx.module, ctx.tmp, ctx.exporter, ctx.facts, ctx.phases)
    ctx.model = ctx.split.skeleton
    ctx.weight_bytes = ctx.split.nbytes
    ctx.large = ctx.weight_bytes >= EXTERNAL_DATA_BYTES


def budget(ctx: "ExportContext") -> None:
    """The optimizer's decision where it is taken before serializing: past its budget, or weights past 2 GB (then
    it goes in before the one serialization, and no copy is made)."""
    from archc.export.optimize import within_budget

    ctx.decision = (_too_large(ctx.model) if ctx.large else
                    within_budget(ctx.model, ctx.optimize, ctx.weight_bytes))


def serialize(ctx: "ExportContext") -> None:
    """The file written from the weights themselves (archc.export.stream), with external data in a folder of its
    own past 2 GB. Then what the checks read: a model whose later passes rewrite it (the optimizer within its
    budget, a row or pixels front) as its bytes; any other as a skeleton pointing into the written file, its weights
    handed to ONNX Runtime as they are (`ctx.shared`), so no copy of them is made."""
    import onnx

    import archc.tempfiles as tempfiles
    from archc.export import stream
    from archc.export.tabular import fitted_table

    path, split = ctx.path, ctx.split
    ctx.table = fitted_table(ctx.facts.columns, ctx.large)  # a fitted tabular input: the file takes a row
    if ctx.pixels and ctx.large:
        raise ExportError("--pixels: expected weights under 2 GB (one file), received more")
    fronted = ctx.table is not None or ctx.pixels  # the checked core gets a front, then is checked again
    # rewritten after the check (the optimizer within its budget, a front), or small: held as bytes (a variant
    # pass may rewrite them); past SHARED_FROM the checks read the written file and the arrays instead
    as_bytes = fronted or (ctx.optimizing and ctx.decision is None) or ctx.weight_bytes < SHARED_FROM
    with ctx.phases("serialize"):
        if ctx.large or not as_bytes:  # the file (and its side file `<name>.data`) in a folder of their own first
            ctx.tmpdir = tempfiles.make(path, folder=True)
        if ctx.large:
            data_name = path.name + ".data"
            offsets = stream.layout(split)
            stream.write_file(os.path.join(ctx.tmpdir, data_name), lambda f: stream.write_data(split, f, offsets))
            model = stream.pointing(split, data_name, offsets)
            ctx.blob = os.path.join(ctx.tmpdir, path.name)
            stream.write_file(ctx.blob, lambda f: f.write(model.SerializeToString()))
            ctx.weights_at = stream.Placed.of(split, data_name, offsets)
        else:
            target = os.path.join(ctx.tmpdir, path.name) if ctx.tmpdir else ctx.tmp
            offsets = {}
            stream.write_file(target, lambda f: offsets.update(stream.write_single(split, f)))
            ctx.weights_at = stream.Placed.of(split, path.name, offsets)
            if as_bytes:
                with open(target, "rb") as f:
                    ctx.blob = f.read()
            else:  # the checks' view: a skeleton beside the file, pointing into it
                ctx.blob = os.path.join(ctx.tmpdir, "check.onnx")  # type: ignore[arg-type]
                view = stream.pointing(split, path.name, offsets)
                stream.write_file(ctx.blob, lambda f: f.write(view.SerializeToString()))
        if not as_bytes:
            ctx.shared = split.arrays
    ctx.core = onnx.ModelProto.FromString(ctx.blob) if fronted else None  # type: ignore[arg-type]
    ctx.model = ctx.split = None


def check(ctx: "ExportContext") -> None:
    """onnx.checker, then ONNX Runtime against torch (archc.export.onnx.parity)."""
    import onnx

    with ctx.phases("check"):
        onnx.checker.check_model(ctx.blob, full_check=False)
    ctx.seconds = time.perf_counter() - ctx.start
    ctx.checked = parity(ctx.module, ctx.graph, ctx.blob, ctx.phases, ctx.shared)


def optimize(ctx: "ExportContext") -> None:
    """The checked graph simplified (archc.export.optimize), checked as the export was, kept where it has fewer
    compute nodes."""
    import onnx

    with ctx.phases("optimize"):
        choice = _optimized(ctx.module, ctx.graph, ctx.blob, ctx.optimize)  # type: ignore[arg-type]
    ctx.decision, ctx.blob, ctx.rewrite = choice.decision, choice.blob, True
    if choice.checked is not None:
        ctx.checked = choice.checked
    ctx.core = onnx.ModelProto.FromString(ctx.blob) if ctx.core is not None else None  # the graph as decided


def row_front(ctx: "ExportContext") -> None:
    """The checked core model with Table.encode in front (archc.export.tabular); checked again."""
    from archc.export.tabular import takes_a_row

    with ctx.phases("row"):
        ctx.blob, ctx.row = takes_a_row(ctx.core, ctx.blob, ctx.table)
    ctx.rewrite = True


def pixels(ctx: "ExportContext") -> None:
    """The checked core model with /255, the layout and mean/std in front (archc.export.pixels); checked against
    torch on the preprocessed images."""
    from archc.export.pixels import takes_pixels

    with ctx.phases("pixels"):
        ctx.blob, ctx.px = takes_pixels(ctx.core, ctx.module, list(ctx.graph.outputs))
    ctx.rewrite = True


def write(ctx: "ExportContext") -> None:
    """The file as decided, renamed into place (the data first), and the export's report."""
    path, graph = ctx.path, ctx.graph
    with ctx.phases("write"):
        if ctx.rewrite:  # the file as decided (archc.optimized set; taking a row): written again
            from archc.export.stream import write_file

            write_file(ctx.tmp, lambda f: f.write(ctx.blob))
            ctx.weights_at = None  # its weights are no longer where the stream writer put them
    ctx.blob = ctx.core = ctx.shared = None  # not held through the passes after
    data_name = path.name + ".data"
    src = ctx.tmp if ctx.tmpdir is None or ctx.rewrite else ctx.tmpdir if ctx.large else \
        os.path.join(ctx.tmpdir, path.name)
    ctx.size = _move_into_place(src, path, data_name if ctx.large else None)
    worst, tol, checks = ctx.checked
    ctx.report = ExportReport(str(path), ctx.exporter, ctx.seconds, worst, tol, checks, ctx.size, dict(ctx.phases),
                              str(path.parent / data_name) if ctx.large else None, check_sizes(graph)[1],
                              ctx.decision, ctx.row, ctx.px)


def _optimized(module, graph: Graph, blob: bytes, optimize: bool | str) -> "Choice":
    """The optimizer's choice for the checked model `blob` (archc.export.optimize.choose): its graph simplified
    where the budget allows, checked as the export was (onnx.checker, then parity at both sizes and the same
    tolerance)."""
    import onnx

    from archc.export.optimize import choose

    def check(candidate: bytes) -> tuple[float, float, list[dict[str, Any]]]:
        onnx.checker.check_model(candidate, full_check=False)
        return parity(module, graph, candidate)

    return choose(blob, check, optimize)


def _too_large(model: "onnx.ModelProto") -> "Decision":
    """A model whose weights go to external data is not optimized (onnxslim works on one in-memory protobuf,
    which holds at most 2 GB): the decision says so, in the file's metadata too."""
    from archc.export.optimize import skipped

    return skipped(model, "was skipped: the weights exceed 2 GB and go to external data")


def _model_proto(compiled: Compiled, module, tmp: str, exporter: str, facts: Facts,
                 phases: Phases) -> "Split":
    """The exported model with spec names and shapes, archc's metadata, and its weights as arrays beside it
    (archc.export.stream.Split): emitted (the default; the arrays are the module's tensors), or traced by torch.onnx
    (torchscript, the fallback: trace, weights, annotate; or dynamo)."""
    from archc.export.stream import split_proto

    graph = compiled.graph
    if exporter == "emit":  # torch.onnx is imported below this line only
        with phases("emit"):
            split = _emitted(graph, module, facts)
        _with_metadata(split.skeleton, compiled, facts, phases)
        return split
    with phases("trace"):
        try:
            exported = _for_torchscript(module) if exporter == "torchscript" else module
            model = _torch_export(module, exported, graph, tmp, exporter)
        except Exception as e:  # torch's exporter raises many kinds; report one clear line
            raise ExportError(f"torch.onnx.export ({exporter}) failed: {str(e).splitlines()[0][:300]}") from e
    with phases("weights"):
        if exporter == "torchscript":
            attach_weights(model, exported, module, list(graph.inputs))
    with phases("annotate"):
        if exporter == "torchscript":
            from archc.export.annotate import annotate  # imports torch (lower.names)

            annotate(model, graph)
    return split_proto(_with_metadata(model, compiled, facts, phases))


def _with_metadata(model: "onnx.ModelProto", compiled: Compiled, facts: Facts,
                   phases: Phases) -> "onnx.ModelProto":
    """The model named as the spec's, with producer, doc string and archc's metadata."""
    import onnx

    graph, spec = compiled.graph, compiled.spec
    with phases("annotate"):
        stamp(model, compiled, metadata(graph, spec, compiled.raw, compiled.sha256, facts))
    return model


def stamp(model: "onnx.ModelProto", compiled: Compiled, props: dict[str, str], role: str = "") -> None:
    """archc as producer, the spec's model name and doc string, and `props` as the model's only metadata. `role`
    (the KV-cache file's "KV-cache decoder"): the graph is named `<name>_kv` and the doc string says what it is."""
    import onnx

    graph, spec = compiled.graph, compiled.spec
    doc = spec.model.doc or f"archc model {graph.name}"
    model.producer_name, model.producer_version = "archc", __version__
    model.graph.name = graph.name + ("_kv" if role else "")
    model.doc_string = f"{role} of {doc}" if role else doc
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)


def _emitted(graph: Graph, module, facts: Facts) -> "Split":
    """The graph written by its ops' emitters (archc.emit), with the module's state_dict as its initializers (the
    tensors themselves, beside the skeleton); the restoring affine of standardized targets (export.restore's
    `target_scale`) is emitted at the outputs."""
    from archc.emit.graph import emit_model
    from archc.export.stream import split_ir

    scales = facts.target_scale or None
    return split_ir(emit_model(graph, module.state_dict(), scales))


def _move_into_place(src: str, path: Path, data_name: str | None) -> int:
    """Rename the checked file (`src`), or the file and its side file (in folder `src`, the data first), over `path`;
    returns the bytes written."""
    from archc.util import default_mode

    moves = [(src, path)] if data_name is None else [(os.path.join(src, name), path.parent / name)
                                                     for name in (data_name, path.name)]
    size = 0
    for frm, to in moves:
        default_mode(frm)
        size += os.path.getsize(frm)
        os.replace(frm, to)
    stale = path.parent / (path.name + ".data")
    if data_name is None and stale.exists():
        os.unlink(stale)  # the side file of an earlier, larger export under this name
    return size
