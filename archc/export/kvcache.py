"""KV-cache export of a decoder-only language model: a second ONNX file, `<stem>.kv.onnx`, beside the model.

One graph serves prefill and decode. Inputs: the tokens [batch, new] (the spec's input name) and, for each
attention layer i in graph order, `past.<i>.key` / `past.<i>.value` [batch, kv_heads, past, head_dim]; outputs:
the logits [batch, new, vocab] (the spec's output name) and `present.<i>.key` / `present.<i>.value`
[batch, kv_heads, past + new, head_dim] (keys after RoPE, before grouped-query sharing). Prefill feeds a past of
length 0; each decode step feeds the previous step's presents. The new tokens sit at positions past..past+new-1:
a learned position table is read from row `past` on (so past + new <= its max_len), RoPE and sinusoidal
positions are offset alike, and query i attends to keys 0..past+i (past+i-window+1..past+i with a `window`: the
window spans past and new keys; the present keeps every key). A score bias from a position op (`alibi`,
`relative_position_bias`, read by `bias_from`) is recomputed for queries past..past+new-1 against keys
0..past+new-1.

The graph is emitted, not traced: the ops' own `emit` hooks write it, as they write model.onnx, in the emitter's
KV-cache mode (archc.emit.builder.KVCache: the ops that read positions get past..past+new-1, each attention layer
reads its past through ONNX's Attention past_key/past_value and returns the presents). So there is one attention
implementation per file format, and the weights are the same state_dict views under the same names as model.onnx's
initializers; on disk the file points into model.onnx's own bytes for them (ONNX external data, written by
archc.export.stream), unless the optimizer rewrote model.onnx. torch.onnx is not imported.

Only specs whose every layer treats positions independently, apart from causal self-attention and score biases
from positions, can be cached (embedding, linear, norms, add/mul, activations, position encodings, tied output:
each op declares it, `Op.positions`). Anything else (a non-causal or cross or padded attention, a score bias from
a node that is no position op, or a position bias read other than as a causal attention's bias_from, a
conv/pool/recurrence over the sequence, several inputs or outputs) is refused with its spec location;
`archc infer --prompt` then recomputes the window per token. The file is parity-checked step by step (prefill +
single-token decodes + a multi-token chunk) against the torch module's full recompute at every position before it
is renamed into place: torch stays the oracle.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from archc.errors import ExportError
from archc.graph.bounds import interval
from archc.graph.ir import Graph, Node
from archc.ops.base import base_axis
from archc.runtime.kvcache import META_KEY, cache_path, file_sha256
import archc.metadata as keys

ATOL, RTOL = 1e-4, 1e-4  # as the plain export's parity check: |onnx - torch| <= ATOL + RTOL * max|torch|
# How each op treats sequence positions is its own declaration (`Op.positions`, `Op.mixes_positions`), so a new
# position-wise op is cacheable without a change here.


@dataclass
class Refusal:
    """Why a spec cannot be cached: where (spec location) and what."""

    where: str
    why: str

    def line(self) -> str:
        return f"{self.where}: {self.why}" if self.where else self.why


def generates(task_kind: str) -> bool:
    """Whether the task kind generates token by token (`archc infer --prompt`): the kinds a cache is for. Read from
    the task registry, so no kind is named here."""
    from archc.tasks import REGISTRY

    return "generate" in REGISTRY[task_kind].modes


def refusal(graph: Graph, task_kind: str) -> Refusal | None:
    """None when the graph is a cacheable decoder-only LM, else the first reason it is not."""
    if not generates(task_kind):
        from archc.tasks import REGISTRY

        kinds = ", ".join(repr(k) for k, cls in REGISTRY.items() if "generate" in cls.modes)
        return Refusal("task", f"expected a task kind that generates ({kinds}), received {task_kind!r}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return Refusal("inputs", f"expected one token input and one logits output, received {len(graph.inputs)} "
                                 f"input(s) and {len(graph.outputs)} output(s)")
    name, t = next(iter(graph.inputs.items()))
    if t.dtype != "int64" or len(t.features) != 1 or not isinstance(t.features[0], str):
        return Refusal(f"inputs.{name}", f"expected int64 tokens [seq] with a symbolic seq axis, received "
                                         f"{t.dtype} {list(t.features)}")
    readers: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for i in node.inputs:
            readers.setdefault(i, []).append(node)
    outputs = set(graph.outputs.values())
    layers = 0
    for node in graph.nodes:
        why = _node_refusal(node, graph) or _bias_refusal(node, readers.get(node.id, []), node.id in outputs)
        if why:
            return Refusal(node.where, why)
        layers += node.op.positions == "attention"
    if not layers:
        return Refusal("layers", "expected at least one causal self-attention layer, received none")
    return None


def _node_refusal(node: Node, graph: Graph) -> str:
    """Why this node mixes positions in a way a cache cannot follow ('' when it does not)."""
    for o in (node.op, node.act):
        if o is None:
            continue
        if o.positions == "mixed":
            return f"op '{o.name()}' is not known to treat positions independently: no KV cache (generation " \
                   f"recomputes)"
        why = o.mixes_positions()
        if why:
            return why
    if node.op.positions != "attention":
        return ""
    read = _read(node.op)
    if len(node.inputs) > 1 + (read is not None):
        return "attention reads a memory or pad tokens (cross or padded attention): no KV cache"
    source = graph.get(node.inputs[-1]) if read is not None else None
    if read is not None and (source is None or source.op.positions != "bias"):
        return f"attention adds a score bias read from a node that is no position op ({read[0]} = '{read[1]}'; " \
               f"the KV-cache graph recomputes only {_bias_ops()} at the cached positions): no KV cache"
    return ""


def _read(op: Any) -> tuple[str, str] | None:
    """The attribute (`Op.reads`: attention's bias_from) by which an op reads one more node, its last input, and
    the node it names; None where it reads none."""
    return next(((name, value) for name in type(op).reads if (value := getattr(op, name, None)) is not None), None)


def _bias_refusal(node: Node, readers: list[Node], output: bool) -> str:
    """A score bias from positions (`positions = "bias"`) is recomputed at the cached positions (queries
    past..past+new-1, keys 0..past+new-1): only a causal attention may read it, as its bias_from."""
    if node.op.positions != "bias":
        return ""
    others = [r for r in readers if r.op.positions != "attention" or _read(r.op) is None
              or r.inputs[-1] != node.id or node.id in r.inputs[:-1]]
    if output or others:
        what = "a graph output" if output else f"'{others[0].id}'"
        return f"the score bias of op '{node.op.name()}' is read by {what}, not only as an attention's bias_from: " \
               f"no KV cache (its keys and queries differ there)"
    return ""


def _bias_ops() -> str:
    from archc.ops.base import REGISTRY

    return ", ".join(sorted(name for name, cls in REGISTRY.items() if cls.positions == "bias"))


def attention_nodes(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op.positions == "attention"]


@dataclass
class CacheLayout:
    """What the runtime needs to feed the cache graph, recorded as metadata archc.kvcache (JSON)."""

    input: str
    output: str
    layers: int
    kv_heads: list[int]
    head_dim: list[int]
    max_positions: int | None  # a learned position table's rows (past + new must stay within), else None
    model_sha256: str = ""
    nodes: list[str] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)  # query heads per layer (GenAI's config names them)
    hidden: int = 0                                 # the attention's model width (the first layer's)

    def past_names(self) -> list[str]:
        return [f"past.{i}.{kv}" for i in range(self.layers) for kv in ("key", "value")]

    def present_names(self) -> list[str]:
        return [f"present.{i}.{kv}" for i in range(self.layers) for kv in ("key", "value")]


def layout(graph: Graph) -> CacheLayout:
    """The cache's layout, from the attention layers' attributes and input types."""
    nodes = attention_nodes(graph)
    dims = [int(graph.type_of(n.inputs[0]).shape[2]) for n in nodes]  # type: ignore[arg-type]  (concrete: infer)
    name, tokens = next(iter(graph.inputs.items()))
    _, limit = interval(graph, base_axis(str(tokens.features[0])))  # positions the tables hold (max_len), if bounded
    return CacheLayout(name, next(iter(graph.outputs)), len(nodes), [n.op.kv_heads for n in nodes],
                       [dim // n.op.num_heads for n, dim in zip(nodes, dims)], limit, nodes=[n.id for n in nodes],
                       heads=[n.op.num_heads for n in nodes], hidden=dims[0])


def empty_past(lay: CacheLayout, batch: int) -> dict[str, np.ndarray]:
    """Past keys/values of length 0: the prefill's feeds."""
    out = {}
    for i in range(lay.layers):
        for kv in ("key", "value"):
            out[f"past.{i}.{kv}"] = np.zeros((batch, lay.kv_heads[i], 0, lay.head_dim[i]), np.float32)
    return out


@dataclass
class CacheReport:
    path: str
    bytes: int
    max_abs_diff: float
    tolerance: float
    steps: int  # cached runs compared with the full recompute
    optimized: Any = None  # archc.export.optimize.Decision when asked to optimize, else None
    genai: Any = None  # archc.export.genai.Package written beside it, or Skipped saying why not
    weights_in: str = ""  # the file whose weights it reads (external data), or '' where it holds its own


def emit_cache(graph: Graph, state: dict[str, Any], lay: CacheLayout) -> Any:
    """The KV-cache graph (an onnx-ir Model): the ops' own emitters in the KV-cache mode (archc.emit.builder.KVCache),
    the initializers the same state_dict views as model.onnx's, under the same names; tokens [batch, new] and the
    past keys/values in, the logits and the present keys/values out."""
    import onnx_ir as ir

    from archc.emit.builder import KVCache
    from archc.emit.graph import emit_model

    f32 = ir.TensorType(ir.DataType.FLOAT)
    kv = lambda name, i, axis: ir.Value(name=name, type=f32,  # noqa: E731
                                        shape=ir.Shape(["batch", lay.kv_heads[i], axis, lay.head_dim[i]]))
    tokens = ir.Value(name=lay.input, type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape(["batch", "new"]))
    past = [(kv(f"past.{i}.key", i, "past"), kv(f"past.{i}.value", i, "past")) for i in range(lay.layers)]
    cache = KVCache(tokens, past)
    model = emit_model(graph, state, cache=cache)
    assert len(cache.present) == lay.layers, "every attention layer hands back its present keys and values"
    logits = model.graph.outputs[0]
    logits.shape = ir.Shape(["batch", "new", *list(logits.shape or [])[2:]])
    model.graph.inputs.extend(v for pair in past for v in pair)
    for i, pair in enumerate(cache.present):
        for kind, value in zip(("key", "value"), pair):
            value.name, value.type = f"present.{i}.{kind}", f32
            value.shape = ir.Shape(["batch", lay.kv_heads[i], "total", lay.head_dim[i]])
            model.graph.outputs.append(value)
    return model


def step_parity(module: Any, graph: Graph, lay: CacheLayout, path: str | bytes,
                shared: dict[str, np.ndarray] | None = None) -> tuple[float, float, int]:
    """Prefill, single-token decodes and a multi-token chunk with ONNX Runtime, each compared with the torch
    module's full forward at the same positions; ExportError at the first mismatch. `shared`: initializers ONNX
    Runtime takes from these arrays (the module's tensors) instead of the file."""
    import torch

    from archc.runtime.session import check_session

    try:
        sess = check_session(path, shared=shared)
    except Exception as e:
        raise ExportError(f"ONNX Runtime cannot load the KV-cache model: {str(e).splitlines()[0][:300]}") from e
    length = min(12, lay.max_positions or 12, graph.sizes.get(next(iter(graph.inputs.values())).features[0], 12))
    vocab = graph.vocab.get(lay.input, 2)
    vocab = vocab if isinstance(vocab, int) else 2
    rng = np.random.default_rng(7)
    batch = 2
    tokens = rng.integers(0, vocab, size=(batch, length)).astype(np.int64)
    module.eval()
    with torch.no_grad():
        full = module(torch.from_numpy(tokens))
    full = (full if isinstance(full, torch.Tensor) else full[0]).detach().numpy()  # (B, L, V)
    prefill = max(1, length // 3)
    cuts = [0, prefill] + list(range(prefill + 1, max(prefill + 1, length - 2))) + [length]  # last: a chunk
    cuts = sorted(set(c for c in cuts if c <= length))
    feeds = empty_past(lay, batch)
    worst, tol = 0.0, 0.0
    for a, b in zip(cuts, cuts[1:]):
        try:
            got = sess.run(None, {lay.input: tokens[:, a:b], **feeds})
        except Exception as e:
            raise ExportError(f"ONNX Runtime failed on the KV-cache model at past {a}, new {b - a}: "
                              f"{str(e).splitlines()[0][:300]}") from e
        ref = full[:, a:b]
        diff = float(np.max(np.abs(ref.astype(np.float64) - got[0])))
        bound = ATOL + RTOL * float(np.max(np.abs(ref)))
        worst, tol = max(worst, diff), max(tol, bound)
        if not diff <= bound:
            raise ExportError(f"KV-cache logits at past {a}, new {b - a}: expected the full recompute's within "
                              f"{bound:.1e}, received a max abs difference of {diff:.3e}")
        feeds = dict(zip(lay.past_names(), got[1:]))
    return worst, tol, len(cuts) - 1


def export_cache(compiled: Any, module: Any, main: str | os.PathLike, optimize: bool | str = False,
                 facts: Any = None, weights_at: Any = None) -> CacheReport | Refusal:
    """Write `<main stem>.kv.onnx` beside the exported model `main` (which must exist) of `compiled` with the weights
    of `module`, or say why not. `facts`: the run's data facts (archc.metadata.Facts) model.onnx's metadata holds,
    copied into this file's. `optimize`: simplified as the main export is (archc.export.optimize), checked step by
    step again, and kept on the same graph criteria.

    `weights_at` (archc.export.stream.Placed: where model.onnx's writer put each weight): the file holds no weights
    of its own; its initializers point into model.onnx (or its `.data` file) through ONNX external data, the same
    bytes (a few kB to write; one copy of the weights on disk and none in memory: the step check reads the module's
    tensors). Without it (a model the optimizer rewrote: its weights are renamed and folded) the file holds its own.

    A stale cache file of an earlier export is removed first, so a refused or failed export leaves none, with the
    GenAI package files it recorded (archc.export.genai); a new package is written once the file is in place."""
    import onnx

    from archc.export import genai, stream
    from archc.export.onnx import metadata, stamp
    from archc.export.optimize import within_budget
    from archc.util import publish, temp_beside

    graph, spec = compiled.graph, compiled.spec
    out = cache_path(main)
    genai.remove_stale(out.parent, genai.recorded(out))
    if out.exists():
        out.unlink()
    why = refusal(graph, spec.task.kind)
    if why is not None:
        return why
    module.eval()
    lay = layout(graph)
    lay.model_sha256 = file_sha256(main)
    meta = metadata(graph, spec, compiled.raw, compiled.sha256, facts)  # model.onnx's (archc.export.onnx)
    meta[META_KEY] = json.dumps(lay.__dict__)
    package = _package(lay, meta, Path(main))
    if isinstance(package, genai.Package):
        meta[genai.META_KEY] = json.dumps(package.digests())
    try:
        with temp_beside(out) as tmp:
            split = stream.split_ir(emit_cache(graph, module.state_dict(), lay))  # the module's tensors, no copy
            model = split.skeleton
            stamp(model, compiled, meta, role="KV-cache decoder")
            decision = within_budget(model, optimize, split.nbytes) if optimize else None  # past it: no copy
            rewritten = bool(optimize) and decision is None  # the optimizer rewrites (and renames) the weights
            own = split if rewritten or weights_at is None else weights_at.pointed(split)
            weights_in = weights_at.location if own is not split else ""
            stream.write_file(tmp, lambda f: stream.write_single(own, f))
            model = None
            onnx.checker.check_model(tmp, full_check=False)
            worst, tol, steps = step_parity(module, graph, lay, tmp, split.arrays)
            if optimize and decision is None:
                decision, checked = _optimize(module, graph, lay, tmp, optimize)
                worst, tol, steps = checked or (worst, tol, steps)
            publish(tmp, out)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the KV-cache model: {str(e).splitlines()[0]}") from e
    if isinstance(package, genai.Package):
        package = genai.write(package, out.parent)
    return CacheReport(str(out), out.stat().st_size, worst, tol, steps, decision, package, weights_in)


def _package(lay: CacheLayout, meta: dict[str, str], main: Path) -> Any:
    """The GenAI package to write beside the cache file (archc.export.genai), or why none: never over a file of
    that name that archc did not write."""
    from archc.export import genai

    package = genai.plan(lay, meta, main)
    clash = genai.clashes(package, main.parent) if isinstance(package, genai.Package) else []
    if clash:
        return genai.Skipped(f"{', '.join(clash)} beside the model {'holds' if len(clash) == 1 else 'hold'} other "
                             "content (a user's file, or another model's package), kept: move it away or export to "
                             "another folder")
    return package


def _optimize(module: Any, graph: Graph, lay: CacheLayout, tmp: str, optimize: bool | str) -> tuple[Any, Any]:
    """Simplify the checked cache model at `tmp` (rewritten in place as decided) and check the result step by
    step; the optimizer's decision, and the step check's figures when the optimized graph is kept."""
    import onnx

    from archc.export.optimize import choose

    def check(blob: bytes) -> tuple[float, float, int]:
        onnx.checker.check_model(blob, full_check=False)
        return step_parity(module, graph, lay, blob)

    with open(tmp, "rb") as f:
        choice = choose(f.read(), check, optimize)
    with open(tmp, "wb") as f:
        f.write(choice.blob)
    return choice.decision, choice.checked


def add_cache(report: Any, compiled: Any, module: Any, optimize: bool | str = False, facts: Any = None,
              weights_at: Any = None) -> Any:
    """After the plain export of `compiled` (its ExportReport `report`): for a language model, write the KV-cache
    file beside it and set `report.kvcache` to its CacheReport, or the Refusal saying why the spec cannot be
    cached; other task kinds get None. Its seconds are the report's phase "kv cache". Returns `report`.

    A failed cache export (its parity check, say) is a note too, not an error: model.onnx is written and checked,
    a finished training run must not end in an error for want of the faster generation path."""
    if not generates(compiled.spec.task.kind):
        report.kvcache = None
        return report
    start = time.perf_counter()
    try:
        report.kvcache = export_cache(compiled, module if module is not None else compiled.module, report.path,
                                      optimize, facts, weights_at)
    except ExportError as e:
        report.kvcache = Refusal(e.where, f"the KV-cache export failed: {e.message}")
    report.phases["kv cache"] = time.perf_counter() - start
    return report


def describe(result: CacheReport | Refusal | None) -> str:
    """One line for the CLI and the training log ('' for a model that is no language model)."""
    if isinstance(result, CacheReport):
        weights = f"; its weights are {result.weights_in}'s, keep the two together" if result.weights_in else ""
        return (f"wrote {result.path} ({result.bytes:,} bytes, KV cache: {result.steps} prefill/decode steps match "
                f"the full recompute, max abs diff {result.max_abs_diff:.2e}{weights})")
    if isinstance(result, Refusal):
        return f"note: no KV-cache export ({result.line()}); `archc infer --prompt` recomputes the window per token"
    return ""


def describe_package(result: CacheReport | Refusal | None) -> str:
    """The GenAI package's line (archc.export.genai) after a cache export ('' without one)."""
    from archc.export.genai import describe as package_line

    return package_line(result.genai) if isinstance(result, CacheReport) else ""
