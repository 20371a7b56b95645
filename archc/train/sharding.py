"""Blocks as units: FSDP2 sharding ([train] strategy = "fsdp") and activation checkpointing ([train]
activation_checkpointing) of the spec's block instances (archc.graph.units), and the sharded checkpoint
(torch.distributed.checkpoint). Lowering (archc.lower) puts a block instance's modules under its path
(`layers.3.self_attn`), so the units are read off the submodule paths.
"""
from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import fx, nn

from archc.graph.ir import Graph
from archc.graph.units import unit_of
from archc.lower.names import module_path


def units(graph: Graph) -> dict[str, list[str]]:
    """Each block instance's submodule paths (nodes and their activations), in graph order. A block that shares
    parameters with a module outside it (weight tying) stays with the root: one parameter, one shard group."""
    out: dict[str, list[str]] = {}
    tied: set[str | None] = set()
    for node in graph.nodes:
        path = module_path(node.id)
        unit = unit_of(path)
        if node.tied is not None:
            tied |= {unit, unit_of(module_path(node.tied))}
        if unit is not None:
            out.setdefault(unit, []).append(path)
    return {k: v for k, v in out.items() if k not in tied}


def shard(model: fx.GraphModule, net: nn.Module, graph: Graph, amp: torch.dtype | None) -> int:
    """FSDP2 (fully_shard) over the process group: each block instance's modules one group, then the root (`net`,
    the module whose forward runs: `model` or its checkpointed form) for the rest. With CUDA autocast (`amp`), the
    parameters are gathered in that dtype and gradients reduced in float32 (MixedPrecisionPolicy); float32
    otherwise. Returns the number of block groups."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=torch.float32) if amp is not None \
        else MixedPrecisionPolicy()
    groups = 0
    for paths in units(graph).values():
        # a node's activation (no parameters) and a module without any need no group
        modules = [m for m in dict.fromkeys(model.get_submodule(p) for p in paths) if any(True for _ in m.parameters())]
        if modules:
            fully_shard(modules, mp_policy=policy)
            groups += 1
    fully_shard(net, mp_policy=policy)
    # FSDP2 warns, at every forward, of a group returning a view (attention's reshaped output), since an in-place
    # op on it would skip the group's pre-backward all-gather; archc's modules compute out of place (archc.nn has
    # no in-place op on activations, and the spec can name none), so the warning only fills the log
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    return groups


class Checkpointed(nn.Module):
    """A block run under torch.utils.checkpoint (non-reentrant): only its inputs are kept for the backward pass,
    its activations recomputed there (with the RNG state of the forward: the same dropout masks)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any) -> Any:
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.inner, *args, use_reentrant=False)


def checkpointed(model: fx.GraphModule, graph: Graph) -> fx.GraphModule:
    """`model` split into consecutive segments (torch.fx split_module), each block instance one, run under
    Checkpointed. The segments hold `model`'s own submodules (the same parameters): `model` stays what is saved
    and exported. A model without blocks comes back as it is."""
    from torch.fx.passes.split_module import split_module

    blocks = set(units(graph))
    if not blocks:
        return model
    part: dict[str, int] = {}  # fx node name -> segment
    keys: list[str | None] = []
    for node in model.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        key = unit_of(node.target) if node.op == "call_module" else None
        key = key if key in blocks else None
        if not keys or keys[-1] != key:
            keys.append(key)
        part[node.name] = len(keys) - 1
    split = split_module(model, model, lambda node: part[node.name], keep_original_order=True)
    for i, key in enumerate(keys):
        if key is not None and hasattr(split, f"submod_{i}"):
            setattr(split, f"submod_{i}", Checkpointed(getattr(split, f"submod_{i}")))
    split.archc_outputs = getattr(model, "archc_outputs", None)
    return split


# --- the sharded checkpoint ----------------------------------------------------------------------------------

def state_of(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The model's and optimizer's state by parameter name, sharded as they are on this rank (DCP's view)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optim = get_state_dict(model, optimizer)
    return {"model": weights, "optim": optim}


def save(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every rank writes its shards of the weights and the optimizer's state into `folder` (a collective)."""
    import torch.distributed.checkpoint as dcp

    with _one_process_is_meant():
        dcp.save(state_of(model, optimizer), checkpoint_id=str(folder), no_dist=not _distributed())


def load(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The weights and optimizer state of `folder` into this rank's shards, whatever world size wrote them (DCP
    re-shards on load; a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = state_of(model, optimizer)
    with _one_process_is_meant():
        dcp.load(state, checkpoint_id=str(folder), no_dist=not _distributed())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def _distributed() -> bool:
    """A process group is up (one process saves and loads without one: DCP's no_dist)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _one_process_is_meant() -> Iterator[None]:
    """DCP's warning that it assumes one process without a process group: here that is what was meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*uninitialized, assuming")
        yield


def prune(root: Path, keep: str) -> None:
    """Remove the sharded checkpoints in `root` but `keep` (archc's own: older steps, or a save a crash cut)."""
    for old in root.iterdir() if root.is_dir() else ():
        if old.is_dir() and old.name != keep and old.name.startswith("step-"):
            shutil.rmtree(old, ignore_errors=True)


def full_weights(model: nn.Module, main: bool) -> dict[str, torch.Tensor] | None:
    """The whole state_dict on the CPU, gathered shard by shard (a collective): on the main rank; None elsewhere."""
    from torch.distributed.tensor import DTensor

    out: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        full = value.full_tensor() if isinstance(value, DTensor) else value
        if main:
            out[name] = full.detach().to("cpu", copy=True).contiguous()
    return out if main else None


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded tensor, the tensor itself otherwise."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t
