"""Training part of a model: [train] freeze, and [train.lora] low-rank adapters (Hu et al. 2021, "LoRA").

An adapter adds (alpha / rank) B A x to a linear layer's output W x + b, with A (rank, in) drawn as torch draws a
Linear's weight and B (out, rank) zero, so training starts from the model as it is. The adapters are hooked to the
model's own nn.Linear modules (forward hooks), so the model, its parameter names and its checkpoints keep the
spec's naming; merged (W + (alpha / rank) B A) they leave a plain model: the weights files and the ONNX hold that.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archc.graph.ir import Graph
from archc.graph.select import linear_parts, parameters, select
from archc.language.model import Lora, Train
from archc.lower.names import module_path

PREFIX = "lora."  # the adapters' tensors in the resume state: lora.<linear layer's module path>.lora_A / lora_B


def torch_name(node: str, key: str) -> str:
    """A spec name (node id, key on the node) -> the module's name for it (ids escaped as lowering escapes them)."""
    return f"{module_path(node)}.{key}" if key else module_path(node)


def frozen(graph: Graph, recipe: Train) -> list[str]:
    """The module's parameter names that do not train: [train] freeze's, else every one when LoRA is on."""
    params = parameters(graph)
    if recipe.freeze is None:
        return [torch_name(p.node, p.key) for p in params] if recipe.lora is not None else []
    chosen, errors = select(recipe.freeze, [p.name for p in params], "train.freeze", "parameters of the model")
    assert not errors, errors  # validate refused the spec before
    return [torch_name(p.node, p.key) for p in params if p.name in chosen]


def freeze(model: nn.Module, names: list[str]) -> None:
    """requires_grad off for these parameters (the optimizer then leaves them out)."""
    for name in names:
        model.get_parameter(name).requires_grad_(False)


class Adapter(nn.Module):
    """One linear layer's low-rank update: x (..., in) -> (alpha / rank) B A dropout(x) (..., out); dropout in
    training mode only."""

    def __init__(self, linear: nn.Linear, lora: Lora, generator: torch.Generator) -> None:
        super().__init__()
        a = torch.empty(lora.rank, linear.in_features)
        bound = 1 / math.sqrt(linear.in_features)  # nn.Linear's kaiming_uniform_(a=sqrt(5)), as PEFT draws A
        a.uniform_(-bound, bound, generator=generator)
        w = linear.weight
        self.lora_A = nn.Parameter(a.to(device=w.device, dtype=w.dtype))                             # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(linear.out_features, lora.rank, device=w.device, dtype=w.dtype))
        self.scale, self.dropout = lora.alpha / lora.rank, lora.dropout

    def forward(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        """`training`: the layer's mode (model.eval() reaches the layer, not the adapters beside the model)."""
        x = F.dropout(x, self.dropout, training) if self.dropout else x
        return F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale  # (..., out)

    def merged(self, weight: torch.Tensor) -> torch.Tensor:
        """weight (out, in) + scale B A, in float32, in the weight's dtype, on the CPU."""
        delta = self.lora_B.detach().float().cpu() @ self.lora_A.detach().float().cpu()              # (out, in)
        return (weight.float() + self.scale * delta).to(weight.dtype)


class Adapters(nn.Module):
    """The adapters of a model's targeted linear layers (`paths`: their module paths), hooked to them."""

    def __init__(self, model: nn.Module, paths: list[str], lora: Lora, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)  # its own: the model's initial weights stay the seed's
        self.paths = paths
        self.adapters = nn.ModuleList(Adapter(model.get_submodule(p), lora, generator) for p in paths)
        self.rank = lora.rank
        self._hooks: list[Any] = []

    @classmethod
    def for_graph(cls, model: nn.Module, graph: Graph, lora: Lora, seed: int) -> "Adapters":
        """The adapters [train.lora] targets declare, in graph order, hooked to `model`."""
        parts = linear_parts(graph)
        chosen, errors = select(lora.targets, [p.name for p in parts], "train.lora.targets", "linear layers")
        assert not errors, errors  # validate refused the spec before
        adapters = cls(model, [torch_name(p.node, p.part) for p in parts if p.name in chosen], lora, seed)
        adapters.attach(model)
        return adapters

    def attach(self, model: nn.Module) -> None:
        """Each adapter's output added to its layer's (a forward hook)."""
        for path, adapter in zip(self.paths, self.adapters):
            self._hooks.append(model.get_submodule(path).register_forward_hook(
                lambda module, args, out, adapter=adapter: out + adapter(args[0], module.training)))

    def detach(self) -> None:
        """The hooks removed: the model computes with its own weights alone."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def merged(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state_dict (on the CPU) with each targeted layer's weight merged with its adapter."""
        out = dict(weights)
        for path, adapter in zip(self.paths, self.adapters):
            out[f"{path}.weight"] = adapter.merged(weights[f"{path}.weight"])
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """The adapters' tensors by name: PREFIX + the layer's module path + '.lora_A' / '.lora_B'."""
        return {f"{PREFIX}{path}.{k}": v for path, a in zip(self.paths, self.adapters)
                for k, v in a.state_dict().items()}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Values from `tensors` (names as `tensors()` gives them): ValueError unless every one is there, shaped."""
        own = self.tensors()
        if set(own) != set(tensors):
            missing = sorted(set(own) ^ set(tensors))
            raise ValueError(f"expected the adapters of [train.lora], received a state that differs at "
                             f"{', '.join(missing[:3])}")
        with torch.no_grad():
            for name, t in own.items():
                if t.shape != tensors[name].shape:
                    raise ValueError(f"{name}: expected the shape {list(t.shape)}, received "
                                     f"{list(tensors[name].shape)}")
                t.copy_(tensors[name])

    def count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Tuned(nn.Module):
    """A model and its adapters as one module, for the optimizer and DDP: the forward is the model's (the adapters
    act through their hooks)."""

    def __init__(self, model: nn.Module, adapters: Adapters) -> None:
        super().__init__()
        self.model, self.adapters = model, adapters

    def forward(self, *args: Any) -> Any:
        return self.model(*args)


def describe(model: nn.Module, adapters: Adapters | None, recipe: Train) -> str:
    """'training 4,096 parameters: LoRA rank 8 (alpha 16) on 14 linear layers, 0 of the model's 26,784' ('' when
    every parameter trains)."""
    if adapters is None and not recipe.freeze:
        return ""
    own = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = "" if adapters is None else (f"adapters of LoRA rank {adapters.rank} (alpha {recipe.lora.alpha:g}) on "  # type: ignore[union-attr]
                                        f"{len(adapters.paths)} linear layer(s), and ")
    extra = adapters.count() if adapters is not None else 0
    return f"training {trained + extra:,} parameters: {lora}{trained:,} of the model's {own:,} (the rest frozen)"
