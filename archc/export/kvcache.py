"""KV-cache export of a decoder-only language model: a second ONNX file, `<stem>.kv.onnx`, beside the model.

One graph serves prefill and decode. Inputs: the tokens [batch, new] (the spec's input name) and, for each
attention layer i in graph order, `past.<i>.key` / `past.<i>.value` [batch, kv_heads, past, head_dim]; outputs:
the logits [batch, new, vocab] (the spec's output name) and `present.<i>.key` / `present.<i>.value`
[batch, kv_heads, past + new, head_dim] (keys after RoPE, before grouped-query sharing). Prefill feeds a past of
length 0; each decode step feeds the previous step's presents. The new tokens sit at positions past..past+new-1:
a learned position table is read from row `past` on (so past + new <= its max_len), RoPE and sinusoidal
positions are offset alike, and query i attends to keys 0..past+i (past+i-window+1..past+i with a `window`: the
window spans past and new keys; the present keeps every key).

Only specs whose every layer treats positions independently, apart from causal self-attention, can be cached
(embedding, linear, norms, add/mul, activations, position encodings, tied output). Anything else (a
non-causal or cross or padded attention, one adding a score bias from another node (`bias_from`: the cached
decoder cannot recompute that node at the cached positions), a conv/pool/recurrence over the sequence, several inputs or outputs)
is refused with its spec location; `archc infer --prompt` then recomputes the window per token.
The file is parity-checked step by step (prefill + single-token decodes + a multi-token chunk) against the
torch module's full recompute at every position before it is renamed into place.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
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

OPSET = 18
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
    layers = 0
    for node in graph.nodes:
        why = _node_refusal(node)
        if why:
            return Refusal(node.where, why)
        layers += node.op.positions == "attention"
    if not layers:
        return Refusal("layers", "expected at least one causal self-attention layer, received none")
    return None


def _node_refusal(node: Node) -> str:
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
    if node.op.positions == "attention" and len(node.inputs) > 1:
        return "attention reads a memory or pad tokens (cross or padded attention): no KV cache"
    return ""


def attention_nodes(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op.positions == "attention"]


def cached_decoder(module: Any, graph: Graph) -> Any:
    """A torch module (tokens, *past) -> (logits, *present) running `module`'s submodules with a KV cache."""
    import torch
    from torch import nn

    from archc.lower.names import act_path, module_path

    class CachedDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module  # registered: parameters shared, not copied
            self.steps = [(n, module.get_submodule(module_path(n.id)),
                           module.get_submodule(act_path(n.id, n.act.name())) if n.act is not None else None)
                          for n in graph.nodes]

        def forward(self, tokens: torch.Tensor, *past: torch.Tensor):  # past: k0, v0, k1, v1, ...
            # Sizes, positions and the mask are computed once and shared by every layer: in the exported graph
            # the shape plumbing (Shape/Gather/Concat/Reshape), not the matrix products, dominates a decode step.
            batch, new, offset = tokens.shape[0], tokens.shape[1], past[0].shape[2]
            pos = torch.arange(new, device=tokens.device) + offset              # absolute positions of the new
            keys = torch.arange(offset + new, device=tokens.device)
            bias = torch.where(keys[None, :] <= pos[:, None], 0.0, float("-inf"))  # (T, P + T): causal, offset
            ctx = {"batch": batch, "new": new, "pos": pos, "bias": bias}
            env: dict[str, torch.Tensor] = {next(iter(graph.inputs)): tokens}
            present: list[torch.Tensor] = []
            for node, mod, act in self.steps:
                args = [env[i] for i in node.inputs]
                kind = node.op.positions
                if kind == "attention":
                    i = len(present)
                    y, k, v = _attend(mod, args[0], past[i], past[i + 1], ctx)
                    present += [k, v]
                elif kind == "offset":
                    y = mod.forward_at(args[0], offset, pos)                        # positions past..past+new-1
                else:
                    y = mod(*args)
                env[node.id] = act(y) if act is not None else y
            return (env[next(iter(graph.outputs.values()))], *present)

    def _rope(a: Any, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (T, rope_dims) at the new positions, once per distinct frequency table."""
        key = ("rope", tuple(a.inv_freq.tolist()))
        if key not in ctx:
            ang = ctx["pos"].to(a.inv_freq.dtype)[:, None] * a.inv_freq[None, :]
            ang = torch.cat((ang, ang), dim=-1)
            ctx[key] = (ang.cos(), ang.sin())
        return ctx[key]

    def _bias(a: Any, ctx: dict) -> torch.Tensor:
        """The additive causal mask (T, P + T) of this layer: Mistral's sliding window over past and new keys (a
        query at position p reads keys p - window + 1 .. p), once per distinct window."""
        if a.window is None:
            return ctx["bias"]
        key = ("window", a.window)
        if key not in ctx:
            keys, pos = torch.arange(ctx["bias"].shape[1], device=ctx["pos"].device), ctx["pos"][:, None]
            ctx[key] = torch.where((keys[None, :] <= pos) & (keys[None, :] > pos - a.window), 0.0, float("-inf"))
        return ctx[key]

    def _attend(a: Any, x: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor, ctx: dict):
        """archc.nn.attention.Attention's causal self-attention after past keys/values: (y, present k, present v).

        Grouped-query attention without copying keys: queries are viewed as (B, Hkv, n, T, d), the n query
        heads of one key/value head side by side (head g * n + j reads key head g, as Attention._shared)."""
        if a.split is not None:
            q, k, v = a.qkv_proj(x).split(a.split, dim=-1)
        else:
            q, k, v = a.q_proj(x), a.k_proj(x), a.v_proj(x)
        b, t, hkv = ctx["batch"], ctx["new"], a.num_kv_heads
        n, d = a.num_heads // hkv, a.out_proj.in_features // a.num_heads
        q = q.view(b, t, hkv, n, d).permute(0, 2, 3, 1, 4)                   # (B, Hkv, n, T, d)
        k = k.view(b, t, hkv, d).transpose(1, 2)                             # (B, Hkv, T, d)
        v = v.view(b, t, hkv, d).transpose(1, 2)
        if a.rope:
            cos, sin = _rope(a, ctx)
            q, k = a._rotate_part(q, cos.to(q.dtype), sin.to(q.dtype)), a._rotate_part(k, cos.to(q.dtype),
                                                                                        sin.to(q.dtype))
        k, v = torch.cat((pk, k), dim=2), torch.cat((pv, v), dim=2)          # (B, Hkv, P + T, d)
        scores = torch.matmul(q * a.scale, k.unsqueeze(2).transpose(-1, -2)) + _bias(a, ctx)  # (B, Hkv, n, T, S)
        y = torch.matmul(scores.softmax(dim=-1), v.unsqueeze(2))            # (B, Hkv, n, T, d)
        return a.out_proj(y.permute(0, 3, 1, 2, 4).reshape(b, t, hkv * n * d)), k, v

    return CachedDecoder().eval()


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


def layout(graph: Graph, module: Any) -> CacheLayout:
    from archc.lower.names import module_path

    nodes = attention_nodes(graph)
    mods = [module.get_submodule(module_path(n.id)) for n in nodes]
    heads = [int(m.num_kv_heads) for m in mods]
    dims = [int(m.out_proj.in_features // m.num_heads) for m in mods]
    name, tokens = next(iter(graph.inputs.items()))
    _, limit = interval(graph, base_axis(str(tokens.features[0])))  # positions the tables hold (max_len), if bounded
    return CacheLayout(name, next(iter(graph.outputs)), len(nodes), heads, dims, limit, nodes=[n.id for n in nodes],
                       heads=[int(m.num_heads) for m in mods], hidden=int(mods[0].out_proj.out_features))


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


def _export_graph(decoder: Any, lay: CacheLayout, path: str) -> None:
    import torch

    batch, past, new = 2, 3, 4  # traced sizes; all three axes are dynamic
    tokens = torch.zeros((batch, new), dtype=torch.int64)
    pasts = tuple(torch.zeros((batch, lay.kv_heads[i], past, lay.head_dim[i]))
                  for i in range(lay.layers) for _ in range(2))
    axes: dict[str, dict[int, str]] = {lay.input: {0: "batch", 1: "new"}, lay.output: {0: "batch", 1: "new"}}
    axes |= {n: {0: "batch", 2: "past"} for n in lay.past_names()}
    axes |= {n: {0: "batch", 2: "total"} for n in lay.present_names()}
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        torch.onnx.export(decoder, (tokens, *pasts), path, input_names=[lay.input, *lay.past_names()],
                          output_names=[lay.output, *lay.present_names()], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def step_parity(module: Any, graph: Graph, lay: CacheLayout, path: str | bytes) -> tuple[float, float, int]:
    """Prefill, single-token decodes and a multi-token chunk with ONNX Runtime, each compared with the torch
    module's full forward at the same positions; ExportError at the first mismatch."""
    import torch

    from archc.runtime.session import check_session

    try:
        sess = check_session(path)
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


def export_cache(graph: Graph, module: Any, task_kind: str, main: str | os.PathLike,
                 optimize: bool | str = False) -> CacheReport | Refusal:
    """Write `<main stem>.kv.onnx` beside the exported model `main` (which must exist), or say why not.
    `optimize`: simplified as the main export is (archc.export.optimize), checked step by step again, and kept
    on the same graph criteria.

    A stale cache file of an earlier export is removed first, so a refused or failed export leaves none, with the
    GenAI package files it recorded (archc.export.genai); a new package is written once the file is in place."""
    import onnx

    from archc.export import genai

    out = cache_path(main)
    genai.remove_stale(out.parent, genai.recorded(out))
    if out.exists():
        out.unlink()
    why = refusal(graph, task_kind)
    if why is not None:
        return why
    module.eval()
    lay = layout(graph, module)
    lay.model_sha256 = file_sha256(main)
    decoder = cached_decoder(module, graph)
    from archc.export.optimize import within_budget
    from archc.util import publish, temp_beside

    try:
        with temp_beside(out) as tmp:
            try:
                _export_graph(decoder, lay, tmp)
            except Exception as e:
                raise ExportError(f"torch.onnx.export of the KV-cache graph failed: {str(e).splitlines()[0][:300]}") from e
            model = onnx.load(tmp)
            base = onnx.load(str(main), load_external_data=False)
            meta = {p.key: p.value for p in base.metadata_props}
            meta[META_KEY] = json.dumps(lay.__dict__)
            meta.pop(keys.OPTIMIZED, None)  # the main file's decision; this file's own is set by _optimize
            package = _package(lay, meta, Path(main))
            if isinstance(package, genai.Package):
                meta[genai.META_KEY] = json.dumps(package.digests())
            model.producer_name, model.producer_version = base.producer_name, base.producer_version
            model.graph.name = base.graph.name + "_kv"
            model.doc_string = "KV-cache decoder of " + (base.doc_string or base.graph.name)
            base = None  # the main model's weights: not held through the checks
            onnx.helper.set_model_props(model, meta)
            decision = within_budget(model, optimize) if optimize else None  # past it: no copy is made
            onnx.save_model(model, tmp)
            model = None
            onnx.checker.check_model(tmp, full_check=False)
            worst, tol, steps = step_parity(module, graph, lay, tmp)
            if optimize and decision is None:
                decision, checked = _optimize(module, graph, lay, tmp, optimize)
                worst, tol, steps = checked or (worst, tol, steps)
            publish(tmp, out)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the KV-cache model: {str(e).splitlines()[0]}") from e
    if isinstance(package, genai.Package):
        package = genai.write(package, out.parent)
    return CacheReport(str(out), out.stat().st_size, worst, tol, steps, decision, package)


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


def add_cache(report: Any, compiled: Any, module: Any, optimize: bool | str = False) -> Any:
    """After the plain export of `compiled` (its ExportReport `report`): for a language model, write the KV-cache
    file beside it and set `report.kvcache` to its CacheReport, or the Refusal saying why the spec cannot be
    cached; other task kinds get None. Returns `report`.

    A failed cache export (its parity check, say) is a note too, not an error: model.onnx is written and checked,
    a finished training run must not end in an error for want of the faster generation path."""
    kind = compiled.spec.task.kind
    if not generates(kind):
        report.kvcache = None
        return report
    try:
        report.kvcache = export_cache(compiled.graph, module if module is not None else compiled.module, kind,
                                      report.path, optimize)
    except ExportError as e:
        report.kvcache = Refusal(e.where, f"the KV-cache export failed: {e.message}")
    return report


def describe(result: CacheReport | Refusal | None) -> str:
    """One line for the CLI and the training log ('' for a model that is no language model)."""
    if isinstance(result, CacheReport):
        return (f"wrote {result.path} ({result.bytes:,} bytes, KV cache: {result.steps} prefill/decode steps match "
                f"the full recompute, max abs diff {result.max_abs_diff:.2e})")
    if isinstance(result, Refusal):
        return f"note: no KV-cache export ({result.line()}); `archc infer --prompt` recomputes the window per token"
    return ""


def describe_package(result: CacheReport | Refusal | None) -> str:
    """The GenAI package's line (archc.export.genai) after a cache export ('' without one)."""
    from archc.export.genai import describe as package_line

    return package_line(result.genai) if isinstance(result, CacheReport) else ""
