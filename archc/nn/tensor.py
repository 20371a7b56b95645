"""Torch modules of the tensor ops torch.nn has no class for (readable names in generated code and ONNX)."""
from __future__ import annotations

import torch
from torch import nn


class Add(nn.Module):
    """Sum of the inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Mul(nn.Module):
    """Product of the inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


class Scale(nn.Module):
    """x * a constant."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.value


class Concat(nn.Module):
    """Concatenate along one axis."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


class Reshape(nn.Module):
    """Reshape each example; the batch axis stays dynamic."""

    def __init__(self, shape: list[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)  # (B, *shape)


class Permute(nn.Module):
    """Reorder axes (the batch axis included, first)."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class Parameter(nn.Module):
    """A learned tensor `weight`, alone over the batch, or concatenated to / added to / multiplied with x."""

    def __init__(self, shape: tuple[int, ...], combine: str, dim: int, first: bool, init: str, std: float,
                 value: float, batched: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(shape))
        self.combine, self.dim, self.first, self.batched = combine, dim, first, batched
        with torch.no_grad():  # torch's and timm's initializers, by name
            if init == "normal":
                nn.init.normal_(self.weight, std=std)
            elif init == "trunc_normal":
                nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)
            else:
                nn.init.constant_(self.weight, {"zeros": 0.0, "ones": 1.0}.get(init, value))

    def _over_batch(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight[0] if self.combine == "concat" and self.weight.dim() == x.dim() else self.weight  # (1, ...)
        return w.expand(x.shape[0], *w.shape)                                # (B, *shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.combine == "add":
            return x + self.weight
        if self.combine == "mul":
            return x * self.weight
        if self.combine == "concat":
            w = self._over_batch(x)
            return torch.cat((w, x) if self.first else (x, w), dim=self.dim)
        return self._over_batch(x) if self.batched else self.weight
