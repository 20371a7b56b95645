"""Block instances: the units that FSDP2 shards and activation checkpointing recomputes (no torch).

A block instance is what one `use` of a [blocks.*] table made, once per repeat: the nodes whose ids start with
`USE.` (or `USE.R.` when repeated, R the repeat index). Every other node (a top-level layer: embeddings, the head)
belongs to the root. The rule reads dotted ids and lowering's submodule paths alike (archc.lower.names keeps the
segments and the repeat indices).
"""
from __future__ import annotations

from archc.graph.ir import Graph, Node


def unit_of(path: str) -> str | None:
    """The block instance of a node id or submodule path ('layers.3.self_attn' -> 'layers.3', 'enc.conv' -> 'enc'),
    None for a top-level layer ('embed_tokens', '_fc1__relu')."""
    parts = path.split(".")
    if len(parts) == 1:
        return None
    return ".".join(parts[:2]) if parts[1].isdigit() and len(parts) > 2 else parts[0]


def block_nodes(graph: Graph) -> dict[str, list[Node]]:
    """Each block instance's nodes, in graph order."""
    out: dict[str, list[Node]] = {}
    for node in graph.nodes:
        unit = unit_of(node.id)
        if unit is not None:
            out.setdefault(unit, []).append(node)
    return out
