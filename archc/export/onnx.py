"""Export a lowered module to one self-contained ONNX file, with metadata, checked against ONNX Runtime.

Exporter: torch.onnx's TorchScript path (dynamo=False) by default. Measured here on the digit classifier it
takes 0.19 s against 3.5 s for dynamo=True, both matching torch to ~1e-7; `exporter="dynamo"` selects the
other. The file is written to a temporary path, parity-checked, then renamed: a failed export leaves nothing.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from archc.version import __version__
from archc.compiled import Compiled
from archc.errors import ExportError
from archc.export.fronts import ATOL, RTOL  # noqa: F401  (the tolerance of every parity check; tests import it here)
from archc.export.tabular import fitted_table, takes_a_row
# the sizes the export traces and checks at are validate's too (its memory check): archc/graph/bounds.py
from archc.graph.bounds import CHECK_BATCHES, PARITY_FLOPS, TRACE_BATCH, affordable, check_sizes, recorded  # noqa: F401
from archc.graph.ir import Graph
from archc.language.model import Spec
from archc.tasks import REGISTRY, task_class
from archc.threads import for_export, torch_threads

OPSET = 18
# "emit" (opt-in, issue 23): archc writes the graph itself, each op through its `emit` hook (archc.emit), at
# archc.emit.graph.OPSET; parity against the torch module is checked as for the traced exporters.
EXPORTERS = ("torchscript", "dynamo", "emit")
# On a busy machine torch runs the trace and the parity references on fewer threads (archc.threads): its OpenMP
# workers spin while they wait, and on a shared 2-core machine (load ~10) a GPT-2 forward took 0.8-2.8 s on 2 threads
# against 0.3-0.4 s on one (benchmarks/bench_export_zoo.py). ONNX Runtime keeps its own either way.
EXTERNAL_DATA_BYTES = 2**31 - 2**26  # weights from here on go to a side file: protobuf's limit is 2 GiB per message


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

    from archc.export.optimize import Choice, Decision

SCORE_TASKS = tuple(kind for kind, cls in REGISTRY.items() if cls.scores)  # kinds whose output holds scores


def output_kind(graph: Graph, name: str, spec: Spec) -> str:
    """What an output holds, as the task kind labels it: logits / probs / log_probs, or plain values."""
    return task_class(spec.task.kind).output_kind(graph, name, spec)


def metadata(graph: Graph, spec: Spec, raw: dict, sha256: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The archc.* metadata `archc infer` reads (values are JSON strings). `extra` entries become archc.<key>;
    its "labels" (the class names training took from the data) replace the spec's in archc.task."""
    extra = dict(extra or {})
    labels = extra.pop("labels", None) or spec.task.labels
    outputs = {name: {"shape": list(graph.type_of(nid).shape), "dtype": graph.type_of(nid).dtype,
                      "kind": output_kind(graph, name, spec)} for name, nid in graph.outputs.items()}
    meta = {
        "archc.version": __version__,
        "archc.spec": json.dumps(raw, sort_keys=True),
        "archc.spec_sha256": sha256,
        "archc.task": json.dumps({"kind": spec.task.kind, "labels": labels}),
        "archc.inputs": json.dumps({k: {"shape": list(t.shape), "dtype": t.dtype} for k, t in graph.inputs.items()}),
        "archc.outputs": json.dumps(outputs),
        "archc.bounds": json.dumps(recorded(graph)),  # sizes and ids `archc infer` checks inputs against
    }
    for key, value in extra.items():
        meta[f"archc.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return meta


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


class _Phases(dict):
    """Seconds spent per export phase (ExportReport.phases; benchmarks/bench_export_zoo.py prints them)."""

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


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


def parity(module, graph: Graph, path: str | bytes,
           phases: _Phases | None = None) -> tuple[float, float, list[dict[str, Any]]]:
    """Run ONNX Runtime (on the file at `path`, or the serialized model) and torch on the same inputs at batch sizes
    other than the traced one (one session for both)."""
    import torch

    from archc.runtime.session import check_session

    phases = phases if phases is not None else _Phases()
    try:
        with phases("session"):
            sess = check_session(path)  # failures are reported as ExportError
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


def export(compiled: Compiled, path: str | Path, module=None, exporter: str = "torchscript",
           extra_metadata: dict[str, Any] | None = None, optimize: bool | str = False,
           pixels: bool = False) -> ExportReport:
    """Export the compiled model's module (or `module`: the same graph lowered, e.g. trained), check it with
    onnx.checker, add names, shapes and metadata, compare with ONNX Runtime, then rename into place. A
    `target_scale` entry of `extra_metadata` (standardized targets) ends the exported graph with the affine that
    restores the targets' units (archc.export.restore), checked with the rest.
    `optimize`: then simplify the checked graph (archc.export.optimize) within its budget ("always": past it),
    check that too, and write it instead where it has fewer compute nodes; the decision goes to metadata
    archc.optimized and ExportReport.optimized. `pixels`: the file takes uint8 [batch, H, W, C] images instead of
    its float input, with /255, the layout and the recorded mean/std in the graph (archc.export.pixels), checked
    against torch on the preprocessed images.

    Weights over EXTERNAL_DATA_BYTES go to `<name>.data` beside the file (protobuf cannot hold 2 GB). Both are
    written in a temporary folder beside `path`, checked there, then renamed: the data first, so a model file
    never names a missing one. A smaller model is written to a temporary file beside `path` while it is checked.
    A failed export leaves nothing."""

    graph, spec = compiled.graph, compiled.spec
    module = module if module is not None else compiled.module
    assert graph is not None and spec is not None and module is not None, "export runs after infer and lower"
    from archc.export.restore import restored

    module = restored(module, graph, extra_metadata)  # standardized targets: the file outputs the targets' units
    if exporter not in EXPORTERS:
        raise ExportError(f"expected exporter {' or '.join(map(repr, EXPORTERS))}, received '{exporter}'")
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ExportError(f"no such directory: {path.parent}", where=str(path))
    module.eval()
    with torch_threads(for_export()):  # the user's --threads, else fewer on a busy machine (archc.threads)
        return _export(compiled, graph, module, path, exporter, extra_metadata, optimize, pixels)


def _export(compiled: Compiled, graph: Graph, module, path: Path, exporter: str,
            extra_metadata: dict[str, Any] | None, optimize: bool | str, pixels: bool = False) -> ExportReport:
    """export() after its argument checks: build, serialize, check and compare under temporary names, then move."""
    import onnx

    phases = _Phases()
    start = time.perf_counter()
    import archc.tempfiles as tempfiles
    from archc.util import write_error

    try:  # the file's temporary name, taken first: a read-only folder fails before the trace
        tmp = tempfiles.make(path)  # removed on SIGTERM and SIGINT too
    except OSError as e:  # name the .onnx asked for
        raise write_error(e, path) from e
    data_name, tmpdir, writer, decision = path.name + ".data", None, None, None
    try:
        model = _model_proto(compiled, module, tmp, exporter, extra_metadata, phases)
        large = weight_bytes(model) >= EXTERNAL_DATA_BYTES
        if optimize and large:
            decision = _too_large(model)
        elif optimize:  # past the optimizer's budget: the decision goes in before the one serialization
            from archc.export.optimize import within_budget

            decision = within_budget(model, optimize)
        table = fitted_table(extra_metadata, large)  # a fitted tabular input: the file takes a row (export.tabular)
        if pixels and large:
            raise ExportError("--pixels: expected weights under 2 GB (one file), received more")
        fronted = table is not None or pixels  # the checked core gets a front, then is checked again
        with phases("serialize"):
            if large:  # the file names its side file `<name>.data`: both go to a folder of their own first
                tmpdir = tempfiles.make(path, folder=True)
                blob: str | bytes = os.path.join(tmpdir, path.name)
                onnx.save_model(model, blob, save_as_external_data=True, all_tensors_to_one_file=True,
                                location=data_name, size_threshold=1024)
            else:  # one copy in memory: checked, loaded by ONNX Runtime and written (in the background) from it
                blob = model.SerializeToString()
                writer = _Writer(tmp, blob) if not fronted else None
        core, model = (model if fronted else None), None
        with phases("check"):
            onnx.checker.check_model(blob, full_check=False)
        seconds = time.perf_counter() - start
        worst, tol, checks = parity(module, graph, blob, phases)
        rewrite = False  # the file's bytes changed after the checked blob's write began
        if optimize and not large and decision is None:
            with phases("optimize"):
                choice = _optimized(module, graph, blob, optimize)  # type: ignore[arg-type]
            decision, blob, rewrite = choice.decision, choice.blob, True
            if choice.checked is not None:
                worst, tol, checks = choice.checked
            core = onnx.ModelProto.FromString(blob) if core is not None else None  # the graph as decided
        if table is not None:  # the checked core model, with Table.encode in front; checked again
            with phases("row"):
                blob, row = takes_a_row(core, blob, table)
            rewrite = True
        if pixels:  # the checked core model, with /255, the layout and mean/std in front; checked against torch
            from archc.export.pixels import takes_pixels

            with phases("pixels"):
                blob, px = takes_pixels(core, module, list(graph.outputs))
            rewrite = True
        with phases("write"):  # what of the file's write the checks did not hide
            if writer is not None:
                writer.join()
            if rewrite:  # the file as decided (archc.optimized set; taking a row): written again
                writer = _Writer(tmp, blob)  # type: ignore[arg-type]
                writer.join()
        size = _move_into_place(tmpdir or tmp, path, data_name if large else None)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the exported model: {str(e).splitlines()[0]}") from e
    except OSError as e:  # a full disk while saving
        raise write_error(e, path) from e
    finally:
        if writer is not None:  # a failed check: let the write end before its file goes
            super(_Writer, writer).join()
        tempfiles.remove(tmp)
        if tmpdir is not None:
            tempfiles.remove(tmpdir)
    return ExportReport(str(path), exporter, seconds, worst, tol, checks, size, dict(phases),
                        str(path.parent / data_name) if large else None, check_sizes(graph)[1], decision,
                        row if table is not None else None, px if pixels else None)


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


def _model_proto(compiled: Compiled, module, tmp: str, exporter: str, extra_metadata: dict[str, Any] | None,
                 phases: _Phases) -> "onnx.ModelProto":
    """The exported model with its weights, spec names and shapes (TorchScript), and archc's metadata."""
    graph = compiled.graph
    # ---- emit hook (issue 23 item 2): the emitter replaces trace, weights and annotate; metadata is shared ----
    if exporter == "emit":
        with phases("emit"):
            model = _emitted(graph, module, extra_metadata)
        return _with_metadata(model, compiled, extra_metadata, phases)
    # ---- end of the emit hook ----
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
    return _with_metadata(model, compiled, extra_metadata, phases)


def _with_metadata(model: "onnx.ModelProto", compiled: Compiled, extra_metadata: dict[str, Any] | None,
                   phases: _Phases) -> "onnx.ModelProto":
    """The model named as the spec's, with producer, doc string and archc's metadata."""
    import onnx

    graph, spec = compiled.graph, compiled.spec
    with phases("annotate"):
        model.producer_name, model.producer_version = "archc", __version__
        model.graph.name = graph.name
        model.doc_string = spec.model.doc or f"archc model {graph.name}"
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, metadata(graph, spec, compiled.raw, compiled.sha256, extra_metadata))
    return model


def _emitted(graph: Graph, module, extra_metadata: dict[str, Any] | None) -> "onnx.ModelProto":
    """The graph written by its ops' emitters (archc.emit), with the module's state_dict as its initializers; the
    restoring affine of standardized targets (export.restore's `target_scale`) is emitted at the outputs."""
    from archc.emit.graph import emit_model, to_proto

    scales = (extra_metadata or {}).get("target_scale") or None
    return to_proto(emit_model(graph, module.state_dict(), scales))


def weight_bytes(model: "onnx.ModelProto") -> int:
    """Serialized bytes of the initializers (what decides between one file and external data)."""
    return sum(t.ByteSize() for t in model.graph.initializer)


class _Writer(threading.Thread):
    """Write bytes to a file while the caller goes on (the parity checks); join() re-raises its OSError."""

    def __init__(self, path: str, data: bytes) -> None:
        super().__init__(daemon=True)
        self.path, self.data, self.error = path, data, None
        self.start()

    def run(self) -> None:
        try:
            with open(self.path, "wb") as f:
                f.write(self.data)
        except OSError as e:
            self.error = e

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


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
