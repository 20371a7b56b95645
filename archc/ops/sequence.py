"""Sequence ops: patchify (a ViT front end), select and slice along an axis, mean pooling (plain or masked)."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from archc.ops.base import (AxisBound, Dim, Example, Op, PosInt, TensorType, as_tuple, base_axis, concrete,
                            expect, expect_float, expect_rank, norm_axis, register)


@register
class Patchify(Op):
    """Cut an image into non-overlapping patches: [batch, C, H, W] -> [batch, (H/p)*(W/p), C*p*p]."""

    op: Literal["patchify"] = "patchify"
    patch_size: PosInt | list[PosInt] = Field(description="patch height and width: an int or [p_h, p_w]")

    family = "sequence"
    examples = (Example({"patch_size": 2}, ((3, 4, 6),)), Example({"patch_size": [2, 3]}, ((1, 4, 9),)))

    def _geometry(self, x: TensorType) -> tuple[int, int, int, tuple[int, int]]:
        expect_float(x)
        expect_rank(x, (4,), "an image [batch, C, H, W]")
        c, h, w = (concrete(d, what) for d, what in zip(x.features, ("channel axis", "height", "width")))
        p = as_tuple(self.patch_size, 2, "patch_size")
        expect(h % p[0] == 0 and w % p[1] == 0, f"height and width divisible by patch_size {p[0]}x{p[1]}",
               f"{x.show()} (H = {h}, W = {w})", hint="crop or pad the image, or pick another patch_size")
        return c, h, w, (p[0], p[1])

    def infer(self, ins):
        c, h, w, (p, q) = self._geometry(ins[0])
        return ins[0].with_shape((ins[0].shape[0], (h // p) * (w // q), c * p * q))

    def flops(self, ins, out, sizes):
        return 0

    def to_torch(self, ins):
        from archc.nn.sequence import Patchify as M
        return M(*self._geometry(ins[0]))

    def emit(self, e):
        c, h, w, (p, q) = self._geometry(e.types[0])
        x = e.op("Reshape", e.ins[0], e.ints(-1, c, h // p, p, w // q, q))                 # (B, C, h, p, w, q)
        x = e.op("Transpose", x, perm=[0, 2, 4, 1, 3, 5])                                  # (B, h, w, C, p, q)
        return e.op("Reshape", x, e.ints(-1, (h // p) * (w // q), c * p * q))


def _axis(x: TensorType, dim: int) -> int:
    """A non-negative per-example axis (not the batch axis)."""
    axis = norm_axis(dim, x.rank)
    expect(axis != 0, "dim naming a per-example axis", f"{dim} (the batch axis)")
    return axis


@register
class Select(Op):
    """Take one position along an axis, removing it: [batch, seq, dim] -> [batch, dim] (index 0: first, -1: last)."""

    op: Literal["select"] = "select"
    index: int = Field(description="position to take; negatives count from the end")
    dim: int = Field(1, description="axis to select along (batch axis = 0)")

    family = "sequence"
    examples = (Example({"index": -1}, (("seq", 4),), sizes={"seq": 5}),
                Example({"index": 1, "dim": 2}, ((3, 4, 2),)))

    def infer(self, ins):
        (x,) = ins
        axis = _axis(x, self.dim)
        n = x.shape[axis]
        if isinstance(n, int):  # a symbolic axis is checked at run time
            expect(-n <= self.index < n, f"index in [{-n}, {n - 1}] for axis {axis} of {x.show()}", str(self.index))
        return x.with_shape(x.shape[:axis] + x.shape[axis + 1:])

    def flops(self, ins, out, sizes):
        return 0

    def bounds(self, ins):
        n = ins[0].shape[_axis(ins[0], self.dim)]
        if not isinstance(n, str):
            return ()
        low = self.index + 1 if self.index >= 0 else -self.index
        return (AxisBound(n, low=low, why=f"index = {self.index}",
                          hint=f"raise [axes] {base_axis(n)}, or select another index"),)

    def to_torch(self, ins):
        from archc.nn.sequence import Select as M
        return M(_axis(ins[0], self.dim), self.index)

    def emit(self, e):  # a scalar index removes the axis; a negative one counts from the end
        return e.op("Gather", e.ins[0], e.scalar(self.index, "int64"), axis=_axis(e.types[0], self.dim))


def slice_length(n: Dim, start: int, end: int | None) -> Dim:
    """The length of x[start:end] along an axis of size n.

    A symbolic axis gives a fixed length when both bounds are non-negative (n is assumed long enough), else
    a derived symbolic name: 'seq-1' for [1:] or [:-1] (so x[:, 1:] and y[:, :-1] of one 'seq' match; 'seq-1'
    cut by 2 is 'seq-3'), and 'seq[-3:]' for a negative start.
    """
    if isinstance(n, int):
        length = len(range(n)[start:end])
        expect(length > 0, f"a non-empty slice of an axis of size {n}", f"[{start}:{'' if end is None else end}]")
        return length
    if start >= 0 and end is not None and end >= 0:
        expect(end > start, "end > start", f"[{start}:{end}]")
        return end - start
    if start >= 0:  # end is None or negative: n minus what is cut from both ends
        cut = start + (-end if end is not None else 0)
        before = re.fullmatch(r"([^-]+)-(\d+)", n)  # 'seq-1' cut again is 'seq-2', not 'seq-1-1': a chain of slices
        if before and cut:                          # keeps a short name (its size_of was quadratic in the chain)
            return f"{before.group(1)}-{int(before.group(2)) + cut}"
        return _derived(n if cut == 0 else f"{n}-{cut}")
    return _derived(f"{n}[{start}:{'' if end is None else end}]")


MAX_DERIVED = 200  # characters of a derived axis name: size_of reads one recursively, a level per slice


def _derived(name: str) -> str:
    expect(len(name) <= MAX_DERIVED, f"an axis derived from a symbolic one by at most a few slices (a name of at most "
                                     f"{MAX_DERIVED} characters)", f"'{name[:40]}…' ({len(name):,} characters)",
           hint="slice a fixed-size axis, or fewer times in a row")
    return name


def slice_range(start: int, end: int | None) -> tuple[int, int | None]:
    """The sizes n of a symbolic axis for which x[start:end] is what slice_length says: (low, high or None).

    [a:b] with both >= 0 has the fixed length b - a only when n >= b; otherwise the slice must be non-empty."""
    if start >= 0 and end is not None and end >= 0:
        return end, None
    if start >= 0:  # n - cut positions
        return start + (-end if end is not None else 0) + 1, None
    if end is None:
        return 1, None
    if end < 0:     # positions n+start .. n+end-1: non-empty once n > -end
        return -end + 1, None
    return 1, end - start - 1  # [-a:b]: non-empty only while n - a < b


def size_of(d: Dim, sizes: dict[str, int]) -> int | None:
    """The size of an axis at these symbol sizes, derived names included ('seq-1', 'seq[-3:]'); None if unknown."""
    if isinstance(d, int):
        return d
    if d in sizes:
        return sizes[d]
    cut = re.fullmatch(r"(.+)-(\d+)", d)
    if cut:
        n = size_of(cut.group(1), sizes)
        return None if n is None else n - int(cut.group(2))
    part = re.fullmatch(r"(.+)\[(-?\d+):(-?\d*)\]", d)
    if part:
        n = size_of(part.group(1), sizes)
        end = int(part.group(3)) if part.group(3) else None
        return None if n is None or n < 0 else len(range(n)[int(part.group(2)):end])
    return None


@register
class Slice(Op):
    """Keep positions start..end-1 along an axis: [batch, seq, dim] -> [batch, len, dim] (Python slice rules)."""

    op: Literal["slice"] = "slice"
    start: int = Field(0, description="first position kept; negatives count from the end")
    end: int | None = Field(None, description="position after the last kept (none: to the end)")
    dim: int = Field(1, description="axis to slice (batch axis = 0)")

    family = "sequence"
    examples = (Example({"start": 1, "end": 3}, (("seq", 4),), sizes={"seq": 5}),
                Example({"start": -3, "end": -1, "dim": -1}, ((2, 6),)),
                Example({"start": 0}, (("seq", 2),), sizes={"seq": 4}))

    def infer(self, ins):
        (x,) = ins
        axis = _axis(x, self.dim)
        length = slice_length(x.shape[axis], self.start, self.end)
        return x.with_shape(x.shape[:axis] + (length,) + x.shape[axis + 1:])

    def flops(self, ins, out, sizes):
        return 0

    def bounds(self, ins):
        n = ins[0].shape[_axis(ins[0], self.dim)]
        if not isinstance(n, str):
            return ()
        low, high = slice_range(self.start, self.end)
        shown = f"[{self.start}:{'' if self.end is None else self.end}]"
        return (AxisBound(n, low, high, why=f"the slice {shown}", hint=f"change [axes] {base_axis(n)} or the slice"),)

    def to_torch(self, ins):
        from archc.nn.sequence import Slice as M
        return M(_axis(ins[0], self.dim), self.start, self.end)

    def emit(self, e):  # ONNX's Slice clamps and counts negatives from the end, as Python's slices do
        end = self.end if self.end is not None else 2**63 - 1
        return e.op("Slice", e.ins[0], e.ints(self.start), e.ints(end), e.ints(_axis(e.types[0], self.dim)))


@register
class MeanPool(Op):
    """Mean over one axis, removing it: [batch, seq, dim] -> [batch, dim]."""

    op: Literal["mean_pool"] = "mean_pool"
    dim: int = Field(1, description="axis to average over (batch axis = 0)")

    family = "sequence"
    examples = (Example({}, (("seq", 4),), sizes={"seq": 6}), Example({"dim": -1}, ((3, 5),)))

    def infer(self, ins):
        (x,) = ins
        expect_float(x)
        axis = _axis(x, self.dim)
        return x.with_shape(x.shape[:axis] + x.shape[axis + 1:])

    def flops(self, ins, out, sizes):
        return ins[0].numel(sizes)

    def to_torch(self, ins):
        from archc.nn.sequence import MeanPool as M
        return M(_axis(ins[0], self.dim))

    def emit(self, e):
        return e.op("ReduceMean", e.ins[0], e.ints(_axis(e.types[0], self.dim)), keepdims=0)


@register
class MaskedMean(Op):
    """Mean over non-pad positions: [batch, seq, dim] and int64 tokens [batch, seq] -> [batch, dim]."""

    op: Literal["masked_mean"] = "masked_mean"
    pad_index: int = Field(0, description="token id of padding; its positions are left out of the mean")

    family = "sequence"
    arity = (2, 2)
    examples = (Example({}, (("seq", 4), ("seq",)), dtype=("float32", "int64"), vocab=3, sizes={"seq": 5}),
                Example({"pad_index": 2}, ((6, 3), (6,)), dtype=("float32", "int64"), vocab=3))

    def infer(self, ins):
        x, tokens = ins
        expect_float(x, "first input (values)")
        expect_rank(x, (3,), "values [batch, seq, dim]")
        expect(tokens.dtype == "int64" and tokens.shape == x.shape[:2],
               f"int64 tokens [{', '.join(map(str, x.shape[:2]))}] as the second input (one per position)",
               f"{tokens.dtype} {tokens.show()}")
        return x.with_shape((x.shape[0], x.shape[2]))

    def flops(self, ins, out, sizes):
        return 2 * ins[0].numel(sizes)

    def to_torch(self, ins):
        from archc.nn.sequence import MaskedMean as M
        return M(self.pad_index)

    def emit(self, e):
        x, tokens = e.ins
        keep = e.op("Cast", e.op("Not", e.op("Equal", tokens, e.scalar(self.pad_index, "int64"))), to=1)
        keep = e.op("Unsqueeze", keep, e.ints(-1))                                         # (B, T, 1)
        count = e.op("Max", e.op("ReduceSum", keep, e.ints(1), keepdims=0), e.scalar(1.0))  # (B, 1): all-pad rows / 1
        return e.op("Div", e.op("ReduceSum", e.op("Mul", x, keep), e.ints(1), keepdims=0), count)  # (B, D)
