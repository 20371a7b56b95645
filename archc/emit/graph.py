"""The compiled graph -> an ONNX model, each spec node written by its op's `emit` hook (no tracing).

Graph inputs and outputs are named and typed as the spec's (symbolic axes by name, as the TorchScript path's
dynamic_axes named them); every spec node's output value is its id, typed by archc's shape inference
(value_info); initializers are the module's state_dict tensors under their names, as numpy views of the torch
tensors (one copy is made when the model is serialized).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from archc.emit.builder import Emitter, KVCache, value_type
from archc.errors import ExportError
from archc.graph.ir import Graph, Node
from archc.graph.located import at_node
from archc.ops.base import NOT_EMITTING

if TYPE_CHECKING:
    import onnx

# Opset 23: Attention and RMSNormalization arrive there. ONNX Runtime 1.31 loads up to 26, and the emit conformance
# test passes at 24, 25 and 26 on CPU too (measured 2026-12-05), but CUDA's kernels at 24+ are unchecked (no GPU
# here) and nothing archc emits gains from them (Swish, 24, would only replace x * sigmoid(x)).
OPSET = 23
IR_VERSION = 10
TARGET_SCALE = "target_scale"  # archc.export.restore's key and module name (not imported: it imports torch)


def not_emitting(graph: Graph) -> list[Node]:
    """The graph's nodes (or their activations) whose op has no emitter yet (ops.base.NOT_EMITTING)."""
    return [n for n in graph.nodes
            if n.op.name() in NOT_EMITTING or (n.act is not None and n.act.name() in NOT_EMITTING)]


class GraphEmitter:
    """Holds the graph being written: the state_dict's tensors (initializers made on first use) and the nodes."""

    def __init__(self, state: dict[str, Any], cache: KVCache | None = None) -> None:
        self.state, self.cache = state, cache
        self.initializers: dict[str, ir.Value] = {}
        self.nodes: list[ir.Node] = []

    def initializer(self, name: str) -> ir.Value:
        """The initializer for state_dict entry `name` (made once; a numpy view of the tensor, no copy)."""
        if name not in self.initializers:
            if name not in self.state:
                raise AssertionError(f"emit: no state_dict entry {name!r}")
            array = _numpy(self.state[name])
            t, shape = ir.TensorType(ir.DataType.from_numpy(array.dtype)), ir.Shape(array.shape)
            self.initializers[name] = ir.Value(name=name, type=t, shape=shape, const_value=ir.Tensor(array, name=name))
        return self.initializers[name]


def _numpy(t: Any) -> np.ndarray:
    """A torch tensor's (or an array's) values as numpy, without a copy when it is a contiguous CPU tensor."""
    if isinstance(t, np.ndarray):
        return t
    t = t.detach()
    if t.device.type != "cpu" or not t.is_contiguous():
        t = t.cpu().contiguous()
    return t.numpy()


def emit_model(graph: Graph, state: dict[str, Any], target_scale: dict[str, Any] | None = None,
               cache: KVCache | None = None) -> ir.Model:
    """The ONNX model (onnx-ir) of `graph` with the weights of `state` (the lowered module's state_dict).

    `target_scale` ({output: {"mean", "std"}}, archc.export.restore): those outputs end with `x * std + mean`.
    `cache`: the KV-cache graph's mode (archc.export.kvcache adds its past inputs and present outputs); the
    computed values then carry no shapes (their sequence axis is the new tokens', the keys' past + new)."""
    from archc.lower.names import act_path, module_path  # the state_dict's paths (lower.names imports torch)

    missing = not_emitting(graph)
    if missing:
        ops = sorted({n.op.name() if n.op.name() in NOT_EMITTING else n.act.name() for n in missing})  # type: ignore
        raise ExportError(f"--exporter emit: expected ops that emit ONNX, received {', '.join(ops)} (not yet "
                          f"emitting)", where=missing[0].where, hint="use --exporter torchscript for this spec")
    g = GraphEmitter(state, cache)
    env: dict[str, ir.Value] = {}
    inputs = []
    for name, t in graph.inputs.items():
        typ, shape = value_type(t)
        env[name] = cache.tokens if cache is not None else ir.Value(name=name, type=typ, shape=shape)
        inputs.append(env[name])
    for node in graph.nodes:
        with at_node(node.where, node.op.name()):
            env[node.id] = _emit_node(g, graph, node, env, module_path, act_path)
    outputs = _outputs(g, graph, env, target_scale or {})
    model_graph = ir.Graph(inputs, outputs, nodes=g.nodes, initializers=list(g.initializers.values()),
                           opset_imports={"": OPSET}, name=graph.name)
    return ir.Model(model_graph, ir_version=IR_VERSION)


def _emit_node(g: GraphEmitter, graph: Graph, node: Node, env: dict[str, ir.Value], module_path, act_path) -> ir.Value:
    """One spec node (and its activation sugar): its ONNX nodes appended to g, its output value named by its id."""
    types = [graph.type_of(i) for i in node.inputs]
    assert node.out is not None, f"{node.id} not inferred"
    tied = module_path(node.tied) if node.tied else None
    e = Emitter(g, node.id, module_path(node.id), [env[i] for i in node.inputs], types, node.out, tied)
    y = node.op.emit(e)
    nodes = e.nodes
    if node.act is not None:
        a = Emitter(g, f"{node.id}/{node.act.name()}", act_path(node.id, node.act.name()), [y], [node.out], node.out)
        y = node.act.emit(a)
        _name_single(e)
        _name_single(a)
        nodes = e.nodes + a.nodes
    else:
        _name_single(e)
    if y.producer() is None or y.producer() not in nodes:  # the input itself (identity, dropout): a node of its own
        y = e.op("Identity", y)
        e.nodes[-1].name = node.id
        nodes = nodes + e.nodes[-1:]
    g.nodes.extend(nodes)
    y.name = node.id
    y.type, y.shape = value_type(node.out)
    if g.cache is not None:
        y.shape = None
    return y


def _name_single(e: Emitter) -> None:
    """A scope that wrote one ONNX node (a Gemm, a Relu) gives it the scope's name, without the op type."""
    real = [n for n in e.nodes if n.op_type != "Constant"]
    if len(real) == 1:
        real[0].name = e.scope


def _outputs(g: GraphEmitter, graph: Graph, env: dict[str, ir.Value], scales: dict[str, Any]) -> list[ir.Value]:
    """The graph's outputs under their spec names (an Identity where one value is two outputs or an input), the
    restoring affine of standardized targets on those in `scales`."""
    outs: list[ir.Value] = []
    taken = set(graph.inputs)
    for name, nid in graph.outputs.items():
        value = env[nid]
        if name in scales:  # the output is the restored value; the node's own keeps its id + "/standardized"
            if value.producer() is not None and value.name == name:
                value.name = f"{name}/standardized"
            value = _restore(g, name, value, scales[name], len(scales) == 1)
        named = value.name != name and any(v.name == name for v in env.values() if v is not value)
        if value.name in taken or value in outs or named:
            value = _identity(g, value, name)  # an input, a value that is already an output, or a name in use
        value.name = name
        value.type, value.shape = value_type(graph.type_of(nid))
        taken.add(name)
        outs.append(value)
    return outs


def _identity(g: GraphEmitter, value: ir.Value, name: str) -> ir.Value:
    node = ir.Node("", "Identity", [value], name=f"{name}/output")
    g.nodes.append(node)
    return node.outputs[0]


def _restore(g: GraphEmitter, name: str, value: ir.Value, stats: dict[str, Any], alone: bool) -> ir.Value:
    """y = x * std + mean (archc.export.restore.Restore), the statistics as initializers under its buffer names."""
    prefix = TARGET_SCALE if alone else f"{TARGET_SCALE}.{name}"
    g.state.setdefault(f"{prefix}.mean", np.asarray(stats["mean"], dtype=np.float32))
    g.state.setdefault(f"{prefix}.std", np.asarray(stats["std"], dtype=np.float32))
    e = Emitter(g, prefix, prefix, [value], [], None)  # type: ignore[arg-type]
    y = e.op("Add", e.op("Mul", value, e.param("std")), e.param("mean"))
    g.nodes.extend(e.nodes)
    return y


def to_proto(model: ir.Model) -> "onnx.ModelProto":
    """The onnx ModelProto (the weights' bytes copied once, into the protobuf). value_info holds the computed values
    only: onnx-ir also lists every initializer there, a second record of its shape that goes stale when a tool
    rewrites the tensor in place (ONNX Runtime's dynamic quantizer transposes a Gemm's weight, then shape inference
    fails: 'Inferred shape and existing shape differ'); the traced file never had them."""
    proto = ir.serde.serialize_model(model)
    weights = {t.name for t in proto.graph.initializer}
    kept = [v for v in proto.graph.value_info if v.name not in weights]
    if len(kept) < len(proto.graph.value_info):
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(kept)
    return proto
