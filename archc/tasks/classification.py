"""classification: one class per example from [batch, classes] scores; cross-entropy, accuracy, likeliest label."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archc.errors import DataError, InputError
from archc.tasks.base import Example, F, SpecLike, Task, np, register, score_output
from archc.labels import CLASSES

if TYPE_CHECKING:
    from archc.ops.base import TensorType
    from archc.tasks.views import ModelView as Model


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (float64, so probabilities sum to 1 closely)."""
    z = np.asarray(x, dtype=np.float64)
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def probabilities(values: np.ndarray, kind: str | None) -> np.ndarray:
    """Class probabilities from an output of the given kind (unknown kinds are treated as logits)."""
    if kind == "probs":
        return np.asarray(values, dtype=np.float64)
    if kind == "log_probs":
        return np.exp(np.asarray(values, dtype=np.float64))
    return softmax(values)


def label_records(model: "Model", outputs: dict[str, np.ndarray], top: int = 0) -> list[dict] | None:
    """label/probability/predicted_index (the likeliest class's position among the labels; and the `top` likeliest) per row of a [rows, classes] score output; None when
    the outputs hold no such scores."""
    name = score_output(model, outputs)
    arr = np.asarray(outputs[name]) if name is not None else None
    if arr is None or arr.ndim not in (1, 2) or not arr.size:
        return None
    sig = model.outputs.get(name)
    probs = probabilities(arr if arr.ndim == 2 else arr[np.newaxis], sig.kind if sig else None)
    labels = (model.task or {}).get("labels") or []

    def label(i: int) -> str:
        return str(labels[i]) if i < len(labels) else str(i)

    out = []
    for row in probs:
        idx = int(np.argmax(row))
        rec: dict[str, Any] = {"label": label(idx), "probability": float(row[idx]), "predicted_index": idx}
        if top > 1:
            order = np.argsort(-row, kind="stable")[:top]
            rec["top"] = [{"label": label(int(i)), "probability": float(row[i])} for i in order]
        out.append(rec)
    return out


@register
class Classification(Task):
    """Cross-entropy with label smoothing over [batch, classes] outputs; metric: accuracy."""

    kind = "classification"
    smooths_labels = True
    mixes_labels = True  # soft (B, K) targets from mixup / cutmix
    data_task = CLASSES
    metric = "accuracy"
    higher_is_better = True
    losses = ("cross_entropy",)
    scores = True
    noun = "classifier"
    output_axes = ("batch", "classes")
    default = True  # a spec without [task] is a classifier
    columns = (("label", str), ("probability", lambda p: f"{p:.4f}"))

    @classmethod
    def output_hint(cls, out: TensorType, spec: SpecLike) -> str:
        if "task" not in spec.model_fields_set:
            return "without a [task] table the kind is classification: declare [task] kind"
        return "pool or flatten to one score per class before the last layer" if out.rank > 2 else ""

    @classmethod
    def score(cls, model, outputs, y):
        """Accuracy of the likeliest class (labels < 0 are not scored)."""
        name = next(iter(outputs))
        sig = model.outputs.get(name)
        probs = probabilities(outputs[name], getattr(sig, "kind", None))
        keep = y >= 0
        return {"accuracy": float(np.mean(probs.argmax(-1)[keep] == y[keep]))}

    @classmethod
    def truth(cls, model, y):
        """The true label's name (the model's labels), '-' for examples not scored (< 0)."""
        labels = (model.task or {}).get("labels") or []
        return [str(labels[i]) if 0 <= i < len(labels) else str(i) if i >= 0 else "-" for i in map(int, y)]

    @classmethod
    def report(cls, model, outputs, y, top=0):
        """Per-class precision, recall and F1, the confusion matrix, accuracy (and top-k accuracy)."""
        from archc.tasks.figures import classes

        name = score_output(model, outputs)
        scores = np.asarray(outputs[name]).reshape(len(y), -1)
        labels = (model.task or {}).get("labels") or []
        return classes(np.asarray(y), scores, [str(labels[i]) if i < len(labels) else str(i)
                                               for i in range(scores.shape[1])], top)

    @classmethod
    def match_classes(cls, model, ds, source):
        """The data's class ids renumbered to the model's outputs by name (a subset of its classes scores as is);
        a class the model never saw is an InputError. A model without labels is scored by index."""
        from archc.data.classes import match, reindex, show

        labels = [str(label) for label in (model.task or {}).get("labels") or []]
        if not labels and ds.classes is not None:
            width = _score_width(model)  # scored by index: a class id past the scores is one no output predicts
            if width is not None and len(ds.classes) > width:
                raise InputError(f"expected at most {width} classes (the model's output has {width} scores and "
                                 f"records no labels), received {len(ds.classes)} in the data: "
                                 f"{show(ds.classes[width:])} beyond them", where=source,
                                 hint="score it on data of the model's classes only")
        if not labels or ds.classes is None:
            return ds
        found = match(ds.classes, labels)
        if found.unknown:
            raise InputError(f"expected classes the model was trained on ({show(labels)}), received "
                             f"{show(found.unknown)} in the data, which the model never saw", where=source,
                             hint="score it on data of the model's classes only")
        return reindex(ds, found.positions, labels)

    @classmethod
    def records(cls, model, outputs, top=0):
        """The likeliest label, its probability and index per example (raw values when no scores fit)."""
        found = label_records(model, outputs, top)
        return found if found is not None else super().records(model, outputs, top)

    @classmethod
    def example(cls) -> Example:
        return Example({"archc": 1, "model": {"name": "iris"}, "inputs": {"x": {"shape": [4]}},
                        "task": {"kind": "classification", "labels": ["setosa", "versicolor", "virginica"]},
                        "layers": [{"op": "linear", "out_features": 8, "act": "relu"},
                                   {"op": "linear", "out_features": 3}],
                        "train": {"epochs": 1, "batch_size": 32},
                        "data": {"source": "sklearn:iris", "normalize": True}},
                       infer=(("--input", "sklearn:iris"),))

    # ---- train ----
    def __init__(self, spec, graph) -> None:
        super().__init__(spec, graph)
        self.classes = self.out_type.shape[1]

    def align(self, dataset):
        """The data's classes in the output's order: re-indexed by name to [task] labels, which must be the same
        set (in any order); without labels the data's own names, one per output, become the model's labels."""
        from archc.data.classes import match, reindex, show

        names = list(dataset.classes or [])
        where = f"data {dataset.name}"
        if self.spec_labels is None:
            if len(names) != self.classes:
                raise DataError(f"expected labels in 0..{self.classes - 1} (the output '{self.output_name}' has "
                                f"{self.classes} classes), received {len(names)} classes in the data: {show(names)}",
                                where=where, hint="declare [task] labels, or give the output one score per class")
            return dataset
        found = match(names, self.spec_labels)
        if found.missing or found.unknown:
            beyond = f"beyond the {len(self.spec_labels)} outputs" if found.by_value else "not in the labels"
            parts = [f"labels the data lacks: {show(found.missing)}"] * bool(found.missing) + \
                    [f"data classes {beyond}: {show(found.unknown)}"] * bool(found.unknown)
            raise DataError(f"expected the classes of {where} ({show(names)}), received labels "
                            f"{show(self.spec_labels)}; {'; '.join(parts)}", where="task.labels",
                            hint="list the data's class names (any order) in [task] labels, or drop labels to "
                                 "take the data's")
        return reindex(dataset, found.positions, self.spec_labels)

    def check(self, dataset) -> None:
        for name, split in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test)):
            if len(split) and int(split.y.max()) >= self.classes:
                raise DataError(f"{name}: expected labels in 0..{self.classes - 1} (the output "
                                f"'{self.output_name}' has {self.classes} classes), received {int(split.y.max())}",
                                where=f"data {dataset.name}")

    def log_probs(self, out):
        """(B, K) log-probabilities from logits, probs or log_probs."""
        if self.out_kind == "probs":
            return out.float().clamp_min(1e-12).log()
        return out.float() if self.out_kind == "log_probs" else F.log_softmax(out.float(), dim=1)

    def loss(self, out, y):
        """Summed cross entropy; y is (B,) class ids or (B, K) soft targets (rows summing to 1, from mixing)."""
        eps = self.label_smoothing
        if y.is_floating_point():  # soft targets: smoothing mixes them with the uniform distribution, as torch does
            if self.out_kind == "logits":
                return F.cross_entropy(out.float(), y.float(), label_smoothing=eps, reduction="sum")
            k = y.shape[1]
            target = y.float() * (1 - eps) + eps / k  # (B, K)
            return -(target * self.log_probs(out)).sum()
        if self.out_kind == "logits":
            return F.cross_entropy(out.float(), y, label_smoothing=eps, reduction="sum")
        logp = self.log_probs(out)  # (B, K)
        nll = F.nll_loss(logp, y, reduction="sum")
        return nll if eps == 0 else (1 - eps) * nll - eps * logp.mean(dim=1).sum()

    def metric_sum(self, out, y):
        """Correct predictions; a soft target counts its most probable class."""
        return (out.argmax(dim=1) == (y.argmax(dim=1) if y.is_floating_point() else y)).sum()


def _score_width(model: "Model") -> int | None:
    """How many classes the model's score output has (its last axis), None where not fixed."""
    name = score_output(model, model.outputs)  # type: ignore[arg-type]  # it reads the names only
    sig = model.outputs[name] if name is not None else None
    width = sig.shape[-1] if sig is not None and sig.shape else None
    return width if isinstance(width, int) and width > 0 else None
