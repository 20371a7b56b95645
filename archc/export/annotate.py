"""Spec structure in the traced file (`--exporter torchscript`, the fallback; the emitter, archc.emit, writes
these names and shapes as it goes): node names from spec ids, archc's inferred shapes as value_info.

The TorchScript exporter names a node after the module it ran in, but only by the module's last attribute name
(`stage1.0.conv1` and `stage2.0.conv1` both become `/conv1`, then `/conv1_1`). So the exporter is given a flat
copy of the GraphModule (`flat_module`): each spec node's module sits at the top under its whole path with `/` for
`.` (`h/0/attn`), the same module objects, so scopes are unique and map back to the spec id. A spec node
that exports as one ONNX node gets its id as the name; one that exports as several gets `id/OpType`, numbered
when repeated. The ONNX value that leaves a spec node's scope (read by another spec node or a graph output) is
that node's output: it is renamed to the id, and its archc type (symbolic axes named as in the spec) becomes its
value_info, so Netron shows the spec's ids and shapes on every edge.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

import numpy as np

from archc.graph.ir import Graph, Node
from archc.lower.names import act_path, module_path

if TYPE_CHECKING:
    import onnx
    from torch import fx


SEP = "/"  # stands for "." in the flat module's attribute names: never in a segment name, allowed by add_module


def flat_module(gm: "fx.GraphModule") -> "fx.GraphModule":
    """The same modules and computation, each called module an attribute of the root named by its whole path."""
    from torch import fx

    graph = fx.Graph()
    remap = graph.graph_copy(gm.graph, {})
    graph.output(remap)
    owned = {}
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr"):
            flat = node.target.replace(".", SEP)
            owned[flat] = gm.get_submodule(node.target) if node.op == "call_module" else _attr(gm, node.target)
            node.target = flat
    return fx.GraphModule(owned, graph)


def _attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def scopes(graph: Graph) -> dict[str, Node]:
    """Flat module name (and a node's activation's) -> the spec node lowered there."""
    out: dict[str, Node] = {}
    for node in graph.nodes:
        out[module_path(node.id).replace(".", SEP)] = node
        if node.act is not None:
            out[act_path(node.id, node.act.name()).replace(".", SEP)] = node
    return out


def owner(onnx_name: str, by_scope: dict[str, Node]) -> Node | None:
    """The spec node whose module an ONNX node name ('/h/0/attn/MatMul_1') ran in; None outside every node."""
    parts = onnx_name.strip("/").split("/")[:-1]  # the last part is the op type
    for k in range(len(parts), 0, -1):  # the outermost ... innermost: the longest path that is a node's
        node = by_scope.get(SEP.join(parts[:k]))
        if node is not None:
            return node
    return None


def annotate(model: "onnx.ModelProto", graph: Graph) -> None:
    """Rename nodes and spec-node outputs after spec ids, and add archc's shapes as value_info."""
    by_scope = scopes(graph)
    owners = [owner(n.name, by_scope) for n in model.graph.node]
    _name_nodes(model, owners)
    _name_values(model, graph, owners)


def _name_nodes(model: "onnx.ModelProto", owners: list[Node | None]) -> None:
    count = Counter(o.id for o in owners if o is not None)
    seen: Counter[str] = Counter()
    for node, own in zip(model.graph.node, owners):
        if own is None:
            continue
        if count[own.id] == 1:
            node.name = own.id
            continue
        base = f"{own.id}/{node.op_type}"
        seen[base] += 1
        node.name = base if seen[base] == 1 else f"{base}_{seen[base] - 1}"


def _name_values(model: "onnx.ModelProto", graph: Graph, owners: list[Node | None]) -> None:
    """Each spec node's output value: renamed to its id (graph outputs keep theirs), typed by archc."""
    from onnx import helper

    made_by: dict[str, Node] = {}
    for node, own in zip(model.graph.node, owners):
        if own is not None:
            made_by.update((v, own) for v in node.output)
    # spec id -> the values read outside its scope along one of the spec's own edges, in order. Only those: the
    # tracer may record a step that several modules share (a no-op cast of one input) in the first one's scope
    # and let the others read it there, and that value is not the first module's output.
    reads = {n.id: set(n.inputs) for n in graph.nodes}
    leaving: dict[str, list[str]] = defaultdict(list)
    for node, own in zip(model.graph.node, owners):
        for v in node.input:
            src = made_by.get(v)
            if src is not None and own is not None and src is not own and src.id in reads[own.id] \
                    and v not in leaving[src.id]:
                leaving[src.id].append(v)
    outputs = {o.name for o in model.graph.output}
    output_of = {v: graph.outputs[v] for v in outputs if v in graph.outputs}  # output name -> the node it is
    for v in outputs:
        if v in made_by and output_of.get(v) == made_by[v].id and v not in leaving[made_by[v].id]:
            leaving[made_by[v].id].append(v)
    renames: dict[str, str] = {}
    taken = {v for n in model.graph.node for v in n.output} | {i.name for i in model.graph.input} \
        | {t.name for t in model.graph.initializer}
    typed = []
    for node in graph.nodes:
        values = leaving.get(node.id, [])
        if len(values) != 1 or node.out is None:  # not exported as its own value, or ambiguous: no claim
            continue
        value = values[0]
        if value not in outputs and node.id not in taken:
            renames[value] = value = node.id
        if value not in outputs:
            dims = [d if isinstance(d, (int, str)) else None for d in node.out.shape]
            typed.append(helper.make_tensor_value_info(value, _elem_type(node.out.dtype), dims))
    for n in model.graph.node:
        n.input[:] = [renames.get(v, v) for v in n.input]
        n.output[:] = [renames.get(v, v) for v in n.output]
    del model.graph.value_info[:]
    model.graph.value_info.extend(typed)


def _elem_type(dtype: str) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
