"""embedding: an encoder used as a feature extractor. Its task output holds float32 vectors, pooled [batch, dim] or
one per token [batch, seq, dim]; `archc infer` shows each vector's dim, L2 norm and first values, `--json` the full
vectors, `-o FILE.npy` the task output's vectors (`.npz`: every output).

Training regresses the vectors onto target vectors (distillation from a teacher's embeddings, or any fixed
targets): a cosine (default) or mean-squared-error loss, scored by the mean cosine similarity. A pretrained encoder
needs no training: `archc build SPEC --weights FILE.safetensors` exports it as it is."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

from archc.errors import DataError, InputError, SpecError
from archc.tasks.base import Example, F, SpecLike, Task, np, recorded_output, register, task_output
from archc.labels import TARGETS

if TYPE_CHECKING:
    from archc.ops.base import TensorType

EPS = 1e-8  # the norm under which a vector counts as zero in the cosine (torch's F.cosine_similarity default)
SHOWN = 4   # values of each vector in the table (--json and -o hold them all)
# the ONNX metadata kind of an output of vectors, by rank: pooled, or one vector per token
KINDS = {2: "embedding", 3: "token_embeddings"}
AXES = {2: "[batch, dim] (pooled vectors)", 3: "[batch, seq, dim] (one vector per token)"}


def is_vectors(out: TensorType) -> bool:
    """float32 [batch, dim] or [batch, seq, dim] with a fixed dim: an output of vectors."""
    return out.dtype == "float32" and out.rank in KINDS and isinstance(out.shape[-1], int)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis, in float64: (..., dim) x2 -> (...)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=-1), EPS) * np.maximum(np.linalg.norm(b, axis=-1), EPS)
    return np.sum(a * b, axis=-1) / norms


def _vector_outputs(model, outputs: dict[str, np.ndarray]) -> list[str]:
    """The outputs holding vectors (by their recorded kind, else their shape), the task's first."""
    first = recorded_output(model)
    names = [n for n in outputs if _kind(model, n, outputs[n]) is not None]
    return sorted(names, key=lambda n: n != first)


def _kind(model, name: str, arr: np.ndarray) -> str | None:
    """'embedding' / 'token_embeddings' for an output of vectors, None for anything else."""
    sig = model.outputs.get(name)
    if sig is not None and sig.kind in KINDS.values():
        return sig.kind
    arr = np.asarray(arr)
    return KINDS.get(arr.ndim) if arr.dtype.kind == "f" else None


def _row(i: int, name: str, vectors: np.ndarray, tokens: bool) -> list[str]:
    """One table row: example, output, (tokens,) dim, L2 norm (per token: the mean over the tokens), the first
    values (per token: of the first token)."""
    v = np.asarray(vectors, dtype=np.float64)                                    # (dim,) or (seq, dim)
    norm = float(np.mean(np.linalg.norm(v, axis=-1))) if v.size else float("nan")
    first = v.reshape(-1, v.shape[-1])[0] if v.size else v.reshape(-1)
    more = ", …" if first.size > SHOWN else ""
    count = [str(v.shape[0]) if v.ndim == 2 else "-"] if tokens else []
    return [str(i), name, *count, str(v.shape[-1]), f"{norm:.4f}",
            "[" + ", ".join(f"{x:.4g}" for x in first[:SHOWN]) + more + "]"]


@register
class Embedding(Task):
    """Cosine (default) or mean squared error of the task output's vectors [batch, dim] or [batch, seq, dim]
    against target vectors of the same shape (npz: y [N, dim], or per token [N, seq * dim] or [N, seq, dim]);
    metric: the mean cosine similarity (per token: averaged over the tokens, then the examples)."""

    kind = "embedding"
    data_task = TARGETS
    metric = "cosine_similarity"
    higher_is_better = True
    losses = ("cosine", "mse")
    noun = "embedding model"

    # ---- validate ----
    @classmethod
    def check_output(cls, name: str, out: TensorType, spec: SpecLike) -> None:
        """float32 vectors with a fixed dim, pooled or per token; [task] labels name classes, which vectors lack."""
        if not is_vectors(out):
            raise SpecError(f"embedding expects the output '{name}' shaped {AXES[2]} or {AXES[3]}, float32 with a "
                            f"fixed dim, received {out.dtype} {out.show()}", where="task.kind",
                            hint="name the output of vectors with [task] output = \"...\"")
        if spec.task.labels is not None:
            raise SpecError(f"expected no labels for embedding (the output '{name}' holds vectors, not scores), "
                            f"received {len(spec.task.labels)}", where="task.labels")

    @classmethod
    def describe(cls, graph, spec: SpecLike) -> str:
        """Which output holds the vectors, and what `archc train` does with them."""
        name = task_output(graph, spec)
        out = graph.type_of(graph.outputs[name])
        others = [f"'{o}' {graph.type_of(n).show()}" for o, n in graph.outputs.items()
                  if o != name and is_vectors(graph.type_of(n))]
        target = f"[N, {out.shape[-1]}]" if out.rank == 2 else f"[N, {out.shape[1]} * {out.shape[-1]}]"
        also = f" (also {', '.join(others)})" if others else ""
        return (f"task: embedding of '{name}' {out.show()}{also}; train: {spec.train.loss or cls.losses[0]} to "
                f"target vectors (npz: y {target}); pretrained: archc build --weights FILE.safetensors")

    # ---- export ----
    @classmethod
    def output_kind(cls, graph, name: str, spec: SpecLike) -> str:
        """Every output of vectors is labelled: 'embedding' (pooled) or 'token_embeddings' (per token)."""
        out = graph.type_of(graph.outputs[name])
        return KINDS[out.rank] if is_vectors(out) else "values"

    # ---- infer ----
    @classmethod
    def score(cls, model, outputs, y) -> dict[str, float]:
        """The task output against the target vectors: mean cosine similarity, MSE and MAE."""
        name = recorded_output(model)
        pred = np.asarray(outputs[name], dtype=np.float64)
        target = np.asarray(y, dtype=np.float64)
        if target.size != pred.size:
            raise InputError(f"expected target vectors of {list(pred.shape)} (output '{name}'), received "
                             f"{list(target.shape)}")
        target = target.reshape(pred.shape)
        return {"cosine_similarity": float(np.mean(cosine(pred, target).reshape(len(pred), -1).mean(axis=1))),
                "mse": float(np.mean((pred - target) ** 2)), "mae": float(np.mean(np.abs(pred - target)))}

    @classmethod
    def cells(cls, model, outputs) -> tuple[list[str], list[list[str]]] | None:
        """The table: per example and output of vectors, the task's first, its tokens (per-token outputs), dim,
        L2 norm and first values."""
        names = _vector_outputs(model, outputs)
        if not names:
            return None
        arrays = {name: np.asarray(outputs[name]) for name in names}
        tokens = any(a.ndim == 3 for a in arrays.values())
        rows = [_row(i, name, arrays[name][i], tokens) for i in range(len(arrays[names[0]])) for name in names]
        return ["#", "output", *(["tokens"] if tokens else []), "dim", "norm", "values"], rows

    @classmethod
    def example(cls) -> Example:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((240, 6)).astype(np.float32)
        y = np.tanh(x @ rng.standard_normal((6, 4))).astype(np.float32)           # a teacher's 4-dim vectors
        buf = io.BytesIO()
        np.savez(buf, x=x, y=y)
        return Example({"archc": 1, "model": {"name": "encoder"}, "inputs": {"x": {"shape": [6]}},
                        "task": {"kind": "embedding"},
                        "layers": [{"op": "linear", "out_features": 16, "act": "relu"},
                                   {"op": "linear", "out_features": 4}],
                        "train": {"epochs": 1, "batch_size": 16},
                        "data": {"source": "npz:teacher.npz"}},
                       infer=(("--input", "npz:{dir}/teacher.npz"),), files={"teacher.npz": buf.getvalue()})

    # ---- train ----
    def __init__(self, spec: SpecLike, graph) -> None:
        super().__init__(spec, graph)
        self.in_features = graph.inputs[self.data_input].features  # binds a symbolic seq to the data's length

    def vectors_per_example(self, x_shape: tuple[int, ...]) -> int | None:
        """How many vectors the output holds for examples shaped `x_shape` (symbolic axes bound by the input);
        None when an axis stays unknown."""
        sizes = {d: n for d, n in zip(self.in_features, x_shape) if isinstance(d, str)}
        axes = [sizes.get(d) if isinstance(d, str) else d for d in self.out_type.features[:-1]]
        return None if None in axes else int(np.prod(axes, dtype=np.int64))

    def check(self, dataset) -> None:
        """Target vectors: as many float values per example as the output holds."""
        dim = self.out_type.features[-1]
        y = dataset.train.y
        got = int(np.prod(y.shape[1:], dtype=np.int64))
        count = self.vectors_per_example(tuple(dataset.train.x.shape[1:]))
        want = count * dim if count is not None else None
        if (want is not None and got != want) or got % dim or not np.issubdtype(y.dtype, np.floating):
            expect = f"{want} float values" if want is not None else f"a multiple of {dim} float values"
            raise DataError(f"expected target vectors of {expect} per example (the output '{self.output_name}' "
                            f"{self.out_type.show()}), received {y.dtype} {list(y.shape[1:])} per example",
                            where=f"data {dataset.name}",
                            hint="an npz: source with y holding each example's target vector (per token: flattened)")

    def _cosine(self, out, y):
        """(B, ..., dim) x2 -> (B,): the mean cosine similarity of each example's vectors."""
        a, b = out.float(), y.reshape(out.shape).float()
        cos = (a * b).sum(-1) / (a.norm(dim=-1).clamp_min(EPS) * b.norm(dim=-1).clamp_min(EPS))
        return cos.reshape(len(out), -1).mean(dim=1)

    def loss(self, out, y):
        if self.loss_name == "mse":
            per_value = F.mse_loss(out.float(), y.reshape(out.shape).float(), reduction="none")
            return per_value.reshape(len(out), -1).mean(dim=1).sum()
        return (1 - self._cosine(out, y)).sum()

    def metric_sum(self, out, y):
        return self._cosine(out, y).sum()

