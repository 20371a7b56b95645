"""The op base class and registry: one class per op holds attributes, shape rule, parameters, FLOPs, lowering."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from archc.errors import ShapeError
from archc.util import FLOAT32_MAX  # an op's float attributes become float32 tensors or constants

if TYPE_CHECKING:  # torch is imported only by lowering, never by validate; onnx_ir only by the emitter
    import onnx_ir as ir
    from torch import nn

Dim = int | str                     # an int is a fixed size, a str a named symbolic axis
BATCH = "batch"                     # the implicit, dynamic first axis of every tensor
ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]



class Emitter(Protocol):
    """What an op's `emit` hook writes its ONNX through: one spec node's scope. archc.emit.builder.Emitter implements
    it; the ops name only this protocol, since archc.emit imports the ops (the package graph stays a DAG, type-only
    imports counted). tests/test_protocols.py checks that the builder has every member and that the ops
    use no other."""

    ins: list["ir.Value"]           # the node's inputs, in `from` order
    types: list["TensorType"]       # their inferred types
    out: "TensorType"               # the node's inferred output type

    def param(self, name: str) -> "ir.Value": ...            # an initializer under its state_dict name
    def tied(self, name: str) -> "ir.Value": ...             # the tied node's parameter
    def op(self, op_type: str, *inputs: "ir.Value | None", **attrs: Any) -> "ir.Value": ...
    def ops(self, op_type: str, *inputs: "ir.Value | None", outputs: int, **attrs: Any) -> Sequence["ir.Value"]: ...
    def const(self, value: Any, dtype: str = "float32") -> "ir.Value": ...
    def ints(self, *values: int) -> "ir.Value": ...
    def scalar(self, value: float | int, dtype: str = "float32") -> "ir.Value": ...
    def dims(self, x: "ir.Value", start: int, end: int | None = None) -> "ir.Value": ...
    def linear(self, x: "ir.Value", prefix: str = "", bias: bool = True, rank: int = 3) -> "ir.Value": ...
    def affine(self, x: "ir.Value", w: "ir.Value", b: "ir.Value | None", rank: int = 3) -> "ir.Value": ...
    # positions: 0..T-1 in model.onnx, past..past+T-1 in the KV-cache graph (archc.export.kvcache)
    @property
    def cache(self) -> "KVCacheMode | None": ...                     # the KV-cache graph's mode, None otherwise
    def span(self, x: "ir.Value") -> tuple["ir.Value", "ir.Value"]: ...   # (start, end) of x's positions
    def positions(self, x: "ir.Value") -> "ir.Value": ...            # x's positions, int64 (T,)
    def key_positions(self, x: "ir.Value") -> "ir.Value": ...        # the keys' positions a query of x reads


class KVCacheMode(Protocol):
    """What the attention op reads of the KV-cache graph's mode (archc.emit.builder.KVCache implements it): its
    layer's past keys and values, the presents it hands back, and values every layer shares, made once."""

    def take(self, e: Emitter) -> tuple["ir.Value", "ir.Value"]: ...
    def give(self, key: "ir.Value", value: "ir.Value") -> None: ...
    def once(self, key: Any, make: Callable[[], Any]) -> Any: ...

@dataclass(frozen=True)
class TensorType:
    """A tensor's shape (batch axis first) and dtype; symbolic axes are names."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def batched(self) -> bool:
        """Whether the first axis is the implicit batch axis (graph inputs, e.g. nodes, may have none)."""
        return bool(self.shape) and self.shape[0] == BATCH

    @property
    def features(self) -> tuple[Dim, ...]:
        """The per-example shape (without the batch axis, when there is one)."""
        return self.shape[1:] if self.batched else self.shape

    def show(self) -> str:
        return "[" + ", ".join(map(str, self.shape)) + "]"

    def numel(self, sizes: dict[str, int] | None = None) -> int:
        """Elements per example; symbolic axes take their size from `sizes` (default 1)."""
        sizes = sizes or {}
        return math.prod(d if isinstance(d, int) else sizes.get(d, 1) for d in self.features)

    def with_shape(self, shape: tuple[Dim, ...] | list[Dim]) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)


@dataclass(frozen=True)
class Example:
    """An op example run by the conformance test: attributes and per-example input shapes."""

    attrs: dict[str, Any]
    inputs: tuple[tuple[int | str, ...], ...]   # per-example shapes; a str is a symbolic axis
    dtype: str | tuple[str, ...] = "float32"     # one dtype, or one per input
    sizes: dict[str, int] = field(default_factory=dict)  # symbolic axis sizes for tracing
    vocab: int | str = 2                         # int64 inputs take values in [0, vocab) (or an axis' size)
    batched: bool = True                         # False: inputs have no implicit batch axis (whole graphs)
    before: tuple[dict[str, Any], ...] = ()      # layers to run first (e.g. the embedding a tied op reuses)
    unbatched: tuple[int, ...] = ()              # inputs (by position) without the batch axis, in a batched example

    def dtypes(self) -> tuple[str, ...]:
        return self.dtype if isinstance(self.dtype, tuple) else (self.dtype,) * len(self.inputs)

    def batched_at(self, k: int) -> bool:
        """Whether input k has the implicit batch axis."""
        return self.batched and k not in self.unbatched

    def spec(self, op: str, model: str, task: str) -> dict[str, Any]:
        """This example as a whole spec (one `op` layer with id 'node', read as task kind `task`): what the
        conformance test and the build fuzzer start from."""
        inputs = {f"x{k}": {"shape": list(shape), "dtype": dtype, "batched": self.batched_at(k)}
                  | ({"vocab": self.vocab} if dtype == "int64" else {})
                  for k, (shape, dtype) in enumerate(zip(self.inputs, self.dtypes()))}
        before = [dict(layer) for layer in self.before]
        if before:
            before[0].setdefault("from", list(inputs) if len(inputs) > 1 else next(iter(inputs)))
        wired = {"from": list(inputs)} if not before else {}
        return {"archc": 1, "model": {"name": model}, "inputs": inputs, "axes": dict(self.sizes),
                "task": {"kind": task}, "layers": [*before, {"op": op, "id": "node", **wired, **self.attrs}]}


@dataclass(frozen=True)
class AxisBound:
    """A size an op needs of a symbolic axis it indexes: low <= size <= high (None: no upper bound).

    `axis` is the name as the op sees it: an input's 'seq', or one derived from it by slicing ('seq-1').
    """

    axis: str
    low: int = 1
    high: int | None = None
    why: str = ""       # what in the op sets it: "max_len = 16 (the position table's rows)"
    hint: str = ""      # how to fix a size outside it


@dataclass(frozen=True)
class ValueBound:
    """Values an op reads from one of its int64 inputs as indices: each in [0, high).

    `high` is a fixed size (an embedding's rows) or an axis the values index (edge_index into 'nodes').
    """

    input: int          # which of the op's inputs
    high: Dim
    why: str = ""
    hint: str = ""


Bound = AxisBound | ValueBound


def base_axis(d: str) -> str:
    """The symbol a derived axis name was made from ('seq-1[-3:]' -> 'seq'): ids cannot hold '-' or '['."""
    return re.split(r"[-\[]", d, maxsplit=1)[0]


class Op(BaseModel):
    """Base of every op: wiring fields shared by all layers, and the hooks each op fills in."""

    # allow_inf_nan=False: every float attribute of every op is finite (TOML's nan/inf and JSON's NaN/Infinity
    # parse as floats); an unbounded side is spelled by leaving the attribute out (clamp), never as inf
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True,
                              allow_inf_nan=False,
                              defer_build=True)  # validators are built on first use: fast `archc validate`

    op: str
    id: Annotated[str, Field(pattern=ID_PATTERN)] | None = Field(None, description="name of this node")
    from_: str | list[str] | None = Field(
        None, alias="from", description="input node(s); default: the previous layer")
    when: bool | str = Field(True, description='false (or an expression that is, "${i == 0}"): the layer is left '
                                               'out and its id names its first input')
    act: str | dict[str, Any] | None = Field(
        None, description='activation applied to the output (sugar): a name, or a table with its attributes '
                          '({ op = "gelu", approximate = "tanh" })')

    family: ClassVar[str] = "tensor"
    arity: ClassVar[tuple[int, int | None]] = (1, 1)  # (min, max) inputs; None = any number
    is_activation: ClassVar[bool] = False
    examples: ClassVar[tuple[Example, ...]] = ()
    # Attributes holding another node's id whose output this op reads besides `from` (attention's bias_from): resolved
    # like `from` and appended to the node's inputs after `from`'s, in this order, where set. So the node read is a
    # real input everywhere (order, inference, lowering, emitting); the op tells its inputs apart by its attributes.
    reads: ClassVar[tuple[str, ...]] = ()
    # Weight tying: the name of an attribute holding another node's id whose parameters this op reuses
    # (counted once, on that node). Such ops implement infer_tied / to_torch_tied instead.
    ties: ClassVar[str | None] = None
    # What a score output ending in this op holds ("probs", "log_probs"); None: unnormalized scores (logits).
    score_kind: ClassVar[str | None] = None
    # How the op treats the positions of a sequence (axis 1 of [batch, seq, ...]), for the KV-cache export (its
    # graph is emitted by the same `emit`, archc.emit.builder.KVCache): "each": every position from itself alone;
    # "offset": reads absolute positions (its emit asks e.positions / e.span: past..past+new-1 there); "attention":
    # causal self-attention (cached); "bias": a score bias [heads, T, S] from positions alone (its emit asks
    # e.positions / e.key_positions), cached where only causal attentions read it (bias_from); "mixed": anything
    # else (no cache). `mixes_positions` refines it per instance.
    positions: ClassVar[str] = "mixed"

    @field_validator("*", mode="after")
    @classmethod
    def _float32(cls, value: Any) -> Any:
        """Every number an op carries fits float32: 1e39 would be inf in the graph (nan/inf are refused by
        allow_inf_nan before this runs)."""
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, float) and abs(v) > FLOAT32_MAX:
                raise ValueError(f"a number of magnitude at most {FLOAT32_MAX:.4g} (float32's largest)")
        return value

    # ---- hooks -------------------------------------------------------------------------------
    def mixes_positions(self) -> str:
        """Why this instance mixes sequence positions although its class's `positions` says not ('' if it does not)."""
        return ""

    def infer(self, ins: list[TensorType]) -> TensorType:
        """The output type for these inputs, or ShapeError saying expected vs received."""
        raise NotImplementedError

    def param_shapes(self, ins: list[TensorType]) -> dict[str, tuple[int, ...]]:
        """Trainable parameter shapes by torch name (e.g. weight, bias)."""
        return {}

    def flops(self, ins: list[TensorType], out: TensorType, sizes: dict[str, int]) -> int:
        """FLOPs per example (a multiply-add counts 2); default: one per output element."""
        return out.numel(sizes)

    def scratch(self, ins: list[TensorType], size: Callable[[Dim], int]) -> int:
        """Elements per example of the largest tensor this op holds while it runs besides its output (attention's
        scores: heads x T x S); `size` gives a dimension's size at the run's axis sizes. Validate counts it in the
        export's memory: ONNX Runtime materializes it."""
        return 0

    def batch_statistics(self, ins: list[TensorType]) -> bool:
        """Whether training normalizes over the batch with one value per channel per example (batchnorm on
        [batch, C]): a batch of one has nothing to normalize over, so validate refuses train.batch_size = 1."""
        return False

    def linear_parts(self) -> tuple[str, ...]:
        """The torch.nn.Linear submodules of this op's module, by path on it ('' for the module itself), each with a
        `PATH.weight` (out, in) in param_shapes: the layers [train.lora] adapters may target."""
        return ()

    def to_torch(self, ins: list[TensorType]) -> "nn.Module":
        """The torch module computing this op (imports torch lazily)."""
        raise NotImplementedError

    def emit(self, e: "Emitter") -> "ir.Value":
        """Write this op's ONNX nodes with `e` (the Emitter protocol above: its inputs e.ins typed e.types, its parameters
        e.param(name) under their state_dict names, nodes e.op(...)) and return the output value. The emitted graph
        must compute what to_torch's module does; the emit conformance test checks it under ONNX Runtime."""
        raise NotImplementedError

    def bounds(self, ins: list[TensorType]) -> tuple[Bound, ...]:
        """What this op indexes: sizes it needs of symbolic axes, ranges it needs of int64 values. Validate
        checks [axes] and input vocab against them; the exporter traces and checks only sizes inside them."""
        return ()

    def infer_tied(self, ins: list[TensorType], tied: dict[str, tuple[int, ...]]) -> TensorType:
        """The output type, given the tied node's parameter shapes (ops with `ties` only)."""
        raise NotImplementedError

    def to_torch_tied(self, ins: list[TensorType], tied: "nn.Module") -> "nn.Module":
        """The torch module, sharing the tied node's module parameters (ops with `ties` only)."""
        raise NotImplementedError

    # ---- derived -----------------------------------------------------------------------------
    @classmethod
    def name(cls) -> str:
        return cls.model_fields["op"].default

    @classmethod
    def doc(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]

    @classmethod
    def attribute_fields(cls) -> dict[str, Any]:
        return {k: f for k, f in cls.model_fields.items() if k not in Op.model_fields}

    def attrs(self) -> dict[str, Any]:
        """The op's own attributes (no wiring)."""
        return {k: getattr(self, k) for k in self.attribute_fields()}

    def num_params(self, ins: list[TensorType]) -> int:
        return sum(math.prod(s) for s in self.param_shapes(ins).values())


REGISTRY: dict[str, type[Op]] = {}

# Ops registered without an `emit` hook yet (issue 23: every op emits its ONNX); empty since every op emits. It only
# shrinks: registering an op that neither emits nor is named here fails, and so does naming an op here that emits
# (tests/ops/test_emit_conformance.py checks both over the registry). `--exporter emit` refuses a spec that uses one,
# naming it.
NOT_EMITTING: frozenset[str] = frozenset()


def emits(cls: type[Op]) -> bool:
    """Whether the op class has its own `emit` hook (any class between it and Op defines one)."""
    return cls.emit is not Op.emit


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add an op to the registry under its `op` literal; it must emit its ONNX (or be listed in
    NOT_EMITTING, the ops still to do)."""
    name = cls.name()
    assert name and name not in REGISTRY, f"op {name!r} registered twice"
    assert emits(cls) != (name in NOT_EMITTING), \
        f"op {name!r}: define its `emit` hook" if name not in NOT_EMITTING else \
        f"op {name!r} emits: remove it from NOT_EMITTING"
    REGISTRY[name] = cls
    return cls


# ---- helpers for shape rules ----------------------------------------------------------------
def expect(ok: bool, expected: str, received: str, hint: str = "") -> None:
    """Raise a ShapeError 'expected …, received …' unless ok."""
    if not ok:
        raise ShapeError(f"expected {expected}, received {received}", hint=hint)


def expect_rank(t: TensorType, ranks: tuple[int, ...], what: str) -> None:
    want = " or ".join(str(r) for r in ranks)
    expect(t.rank in ranks, f"{what} of rank {want} (batch axis included)",
           f"{t.show()} (rank {t.rank})")


def expect_float(t: TensorType, what: str = "input") -> None:
    expect(t.dtype == "float32", f"a float32 {what}", f"{t.dtype} {t.show()}")


def concrete(d: Dim, what: str) -> int:
    """A fixed size, or a ShapeError naming the symbolic axis."""
    if isinstance(d, str):
        raise ShapeError(f"expected a fixed {what}, received symbolic axis '{d}'",
                         hint="this op's parameters depend on it; give that axis a fixed size")
    return d


def norm_axis(axis: int, rank: int, what: str = "dim") -> int:
    """A torch-style axis (batch axis is 0, negatives count from the end) made non-negative."""
    expect(-rank <= axis < rank, f"{what} in [{-rank}, {rank - 1}] for a rank-{rank} tensor", str(axis))
    return axis % rank


def as_tuple(v: int | list[int], n: int, what: str) -> tuple[int, ...]:
    """Expand an int or an n-list (kernel_size = 3 or [3, 3])."""
    if isinstance(v, int):
        return (v,) * n
    expect(len(v) == n, f"{what} as one int or a list of {n}", str(list(v)))
    return tuple(v)
