"""What `archc validate [--nproc N]` says about memory (no torch): the figures and refusals are archc.graph.memory's
(the one estimate, which `archc build` and `archc train` refuse on); this words them for validate.

  memory: weights W (float32); export's checks E at most (the export's trace at ...)
  training memory per rank (ddp over 2 ranks, 32 examples a batch): weights + gradients (+ ddp buckets) + optimizer
  state + activations = total
then, on stderr, a `warning:` line per refusal `archc build` or `archc train --nproc N` would make on this machine's
memory (a run on GPUs compares each rank with its GPU's memory instead: validate cannot see a GPU without torch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archc.graph.ir import Graph
from archc.graph.memory import Training, memory_limit, training, training_refusals, warning

__all__ = ["Report", "report", "Training"]


@dataclass
class Report:
    """validate's memory lines: `lines` for stdout, `warnings` for stderr, `json` for --json's training_memory."""

    lines: list[str]
    warnings: list[str] = field(default_factory=list)
    json: dict[str, Any] = field(default_factory=dict)


def report(graph: Graph, recipe: Any, ranks: int = 1) -> Report:
    """The training figures per rank for `recipe`'s strategy over `ranks` CPU ranks on this machine, and the
    warnings for what build or train would refuse (build's first: a model too big to build is not trained)."""
    per_rank = training(graph, recipe, ranks)
    built = graph.memory.build if graph.memory is not None else []
    refused = [] if built else training_refusals(graph, recipe, ranks)
    warnings = [warning(e, "`archc build` and `archc train`") for e in built]
    warnings += [warning(e, f"`archc train{f' --nproc {ranks}' * (ranks > 1)}` on this machine's CPU") for e in refused]
    return Report([per_rank.line(recipe.optimizer.name)], warnings,
                  per_rank.to_json() | {"limit": memory_limit(), "fits": not built and not refused})
