"""Lower a Graph to a torch.fx GraphModule: one submodule per node, named from its spec id by lower.names."""
from __future__ import annotations

import torch
from torch import fx, nn

from archc.graph.ir import Graph, Node
from archc.graph.located import at_node
from archc.lower.names import act_path, class_name, module_path, value_name


def lower(graph: Graph, seed: int | None = 0) -> fx.GraphModule:
    """Build the module; parameters are initialized from `seed` (torch's default init) when given.

    A failure inside one op's `to_torch` is re-raised at that node's spec location (graph.located)."""
    if seed is not None:
        torch.manual_seed(seed)
    modules: dict[str, nn.Module] = {}  # by node id (weight tying looks them up); paths come at the end
    paths: dict[str, nn.Module] = {}  # submodule path -> module, the GraphModule's tree
    g = fx.Graph()
    env: dict[str, fx.Node] = {name: g.placeholder(value_name(name)) for name in graph.inputs}
    for node in graph.nodes:
        with at_node(node.where, node.op.name()):
            env[node.id] = _lower_node(graph, node, g, modules, paths, env)
    outs = [env[v] for v in graph.outputs.values()]
    g.output(outs[0] if len(outs) == 1 else tuple(outs))
    gm = fx.GraphModule(paths, g, class_name=class_name(graph.name))
    gm.archc_outputs = list(graph.outputs)  # output names, in order
    return gm


def _lower_node(graph: Graph, node: Node, g: fx.Graph, modules: dict[str, nn.Module],
                paths: dict[str, nn.Module], env: dict[str, fx.Node]) -> fx.Node:
    """One node's submodule (and its activation's), called on its inputs' fx values; returns its output value."""
    ins = [graph.type_of(i) for i in node.inputs]
    module = node.op.to_torch_tied(ins, modules[node.tied]) if node.tied else node.op.to_torch(ins)
    _check_params(module, node.params)
    modules[node.id] = paths[module_path(node.id)] = module
    args = tuple(env[i] for i in node.inputs)
    # fx picks each value's final name from the hint (unique, never a keyword or builtin): the id stays readable
    hint = value_name(node.id)
    if node.act is None:
        return g.create_node("call_module", module_path(node.id), args, name=hint)
    pre = g.create_node("call_module", module_path(node.id), args, name=f"{hint}_pre")
    act = act_path(node.id, node.act.name())
    paths[act] = node.act.to_torch([node.out])
    return g.create_node("call_module", act, (pre,), name=hint)


def _check_params(module: nn.Module, expected: dict[str, tuple[int, ...]]) -> None:
    """The torch module's parameters must equal the pure-Python rule (a compiler invariant: a bug if not)."""
    got = {k: tuple(p.shape) for k, p in module.named_parameters()}
    if got != expected:
        raise AssertionError(f"parameters {got} differ from the shape rule's {expected}")

