"""Lower a Graph to a torch.fx GraphModule: one submodule per node, named by its spec id."""
from __future__ import annotations

import torch
from torch import fx, nn

from archc.graph.ir import Graph, Node
from archc.graph.located import at_node


def lower(graph: Graph, seed: int | None = 0) -> fx.GraphModule:
    """Build the module; parameters are initialized from `seed` (torch's default init) when given.

    A failure inside one op's `to_torch` is re-raised at that node's spec location (graph.located)."""
    if seed is not None:
        torch.manual_seed(seed)
    modules: dict[str, nn.Module] = {}
    g = fx.Graph()
    env: dict[str, fx.Node] = {name: g.placeholder(name) for name in graph.inputs}
    for node in graph.nodes:
        with at_node(node.where, node.op.name()):
            env[node.id] = _lower_node(graph, node, g, modules, env)
    outs = [env[v] for v in graph.outputs.values()]
    g.output(outs[0] if len(outs) == 1 else tuple(outs))
    gm = fx.GraphModule(modules, g, class_name=_py_name(graph.name) or "Model")
    gm.archc_outputs = list(graph.outputs)  # output names, in order
    return gm


def _lower_node(graph: Graph, node: Node, g: fx.Graph, modules: dict[str, nn.Module],
                env: dict[str, fx.Node]) -> fx.Node:
    """One node's submodule (and its activation's), called on its inputs' fx values; returns its output value."""
    ins = [graph.type_of(i) for i in node.inputs]
    module = node.op.to_torch_tied(ins, modules[node.tied]) if node.tied else node.op.to_torch(ins)
    _check_params(module, node.params)
    modules[node.id] = module
    value = g.call_module(node.id, tuple(env[i] for i in node.inputs))
    if node.act is not None:
        value.name = _py_name(node.id) + "_pre"
        modules[f"{node.id}_{node.act.name()}"] = node.act.to_torch([node.out])
        value = g.call_module(f"{node.id}_{node.act.name()}", (value,))
    value.name = _py_name(node.id)
    return value


def _check_params(module: nn.Module, expected: dict[str, tuple[int, ...]]) -> None:
    """The torch module's parameters must equal the pure-Python rule (a compiler invariant: a bug if not)."""
    got = {k: tuple(p.shape) for k, p in module.named_parameters()}
    if got != expected:
        raise AssertionError(f"parameters {got} differ from the shape rule's {expected}")


def _py_name(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else f"m_{out}"
