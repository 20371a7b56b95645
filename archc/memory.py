"""Training memory per rank, estimated before launching (no torch): what `archc validate` reports for the recipe's
[train] strategy at --nproc N.

  weights      every parameter in float32 (the optimizer's master copy, whatever autocast computes in)
  gradients    one float32 per parameter
  optimizer    AdamW / Adam: two moments (8 bytes a parameter); SGD with momentum: one (4); plain SGD: none
  activations  an estimate: every node's output (and its `act`'s) at the rank's share of the batch, symbolic axes at
               their [axes] size, kept for the backward pass; with activation_checkpointing, only each block's
               output is kept and one block's activations at a time are recomputed
FSDP2 (strategy = "fsdp") shards the first three over the ranks; DDP keeps a full copy of each on every rank.
Not counted: the framework itself (torch's own few hundred MB), FSDP's gathered copy of the block being computed,
an op's scratch (attention's scores where the kernel keeps them), loader workers and allocator slack.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from archc.graph.memory import BYTES, human_bytes, optimizer_copies
from archc.graph.ir import Graph, Node
from archc.graph.units import block_nodes

@dataclass
class Memory:
    """Bytes per rank."""

    strategy: str
    ranks: int
    batch_per_rank: int
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"total": self.total}

    def line(self, optimizer: str) -> str:
        """'training memory per rank (fsdp over 2 ranks, 32 examples each): weights 1.0 MiB + ...'."""
        share = f"{self.strategy} over {self.ranks} ranks" if self.ranks > 1 else f"{self.strategy}, one process"
        hint = " (fsdp shards the first three over --nproc ranks)" if self.strategy == "fsdp" and self.ranks == 1 \
            else ""
        return (f"training memory per rank ({share}, {self.batch_per_rank} examples a batch): weights "
                f"{human_bytes(self.weights)} + gradients {human_bytes(self.gradients)} + {optimizer} state "
                f"{human_bytes(self.optimizer)} + activations ~{human_bytes(self.activations)} = "
                f"~{human_bytes(self.total)}{hint}")


def _held(node: Node, sizes: dict[str, int]) -> int:
    """Bytes per example a node's output (and its activation's) holds."""
    if node.out is None:
        return 0
    return node.out.numel(sizes) * BYTES.get(node.out.dtype, 4) * (2 if node.act is not None else 1)


def activation_bytes(graph: Graph, checkpointing: bool) -> int:
    """Bytes per example kept for the backward pass (the estimate above)."""
    every = sum(_held(n, graph.sizes) for n in graph.nodes)
    if not checkpointing:
        return every
    blocks = block_nodes(graph)
    inside = [sum(_held(n, graph.sizes) for n in nodes) for nodes in blocks.values()]
    outputs = sum(_held(nodes[-1], graph.sizes) for nodes in blocks.values())
    return every - sum(inside) + outputs + max(inside, default=0)


def training_memory(graph: Graph, recipe: Any, ranks: int = 1) -> Memory:
    """Per-rank memory of training `graph` with `recipe` ([train]) over `ranks` processes."""
    params = graph.total_params
    opt = recipe.optimizer
    state = 4 * optimizer_copies(opt)  # float32 state tensors per parameter
    shards = ranks if recipe.strategy == "fsdp" else 1
    per_rank = -(-recipe.batch_size // ranks)
    return Memory(recipe.strategy, ranks, per_rank, -(-params * 4 // shards), -(-params * 4 // shards),
                  -(-params * state // shards), activation_bytes(graph, recipe.activation_checkpointing) * per_rank)
