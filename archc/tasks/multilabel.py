"""multilabel: any number of labels per example from [batch, labels] logits; binary cross-entropy through a
sigmoid, per-label accuracy; `archc infer` shows the labels over 0.5 with their probabilities."""
from __future__ import annotations

import io

from archc.errors import DataError, InputError, SpecError
from archc.tasks.base import Example, F, SpecLike, Task, np, register, score_output, task_output
from archc.labels import TARGETS

THRESHOLD = 0.5  # a label is on when its probability exceeds this


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float64, without overflow warnings."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def _names(model, n: int) -> list[str]:
    """The model's [task] labels, else the label indices."""
    labels = (model.task or {}).get("labels") or []
    return [str(labels[i]) if i < len(labels) else str(i) for i in range(n)]


def _differences(found) -> str:
    """'; labels the data lacks: ...; data columns not in the labels: ...' of a archc.data.classes.Match."""
    from archc.data.classes import show

    parts = [f"labels the data lacks: {show(found.missing)}"] * bool(found.missing) + \
            [f"data columns not in the labels: {show(found.unknown)}"] * bool(found.unknown)
    return "".join(f"; {p}" for p in parts)


@register
class Multilabel(Task):
    """Binary cross-entropy (with logits) per label over [batch, labels] outputs against 0/1 targets [batch, labels];
    metric: label accuracy (the mean over labels of right on/off calls)."""

    kind = "multilabel"
    smooths_labels = True
    data_task = TARGETS  # float targets of any width, from the loader's point of view (here 0/1 vectors)
    metric = "label_accuracy"
    higher_is_better = True
    losses = ("binary_cross_entropy",)
    scores = True
    noun = "multilabel classifier"
    output_axes = ("batch", "labels")
    score_noun = "logits"
    columns = (("labels", lambda names: ", ".join(names) or "-"),
               ("probabilities", lambda ps: ", ".join(f"{p:.4f}" for p in ps)))

    @classmethod
    def validate(cls, graph, spec: SpecLike) -> None:
        """The base rule, then: the output holds logits (the sigmoid is applied by the loss and by infer)."""
        super().validate(graph, spec)
        name = task_output(graph, spec)
        if graph.score_kind(graph.outputs[name]) != "logits":
            raise SpecError(f"multilabel expects logits from output '{name}', received "
                            f"{graph.score_kind(graph.outputs[name])}", where="task.kind",
                            hint="drop the final (log_)softmax: each label gets its own sigmoid")

    # ---- infer ----
    @classmethod
    def score(cls, model, outputs, y):
        """Label accuracy, exact-match accuracy, and accuracy and F1 per label."""
        name = score_output(model, outputs)
        on = sigmoid(outputs[name]) > THRESHOLD                                      # (N, L)
        truth = np.asarray(y).reshape(on.shape) > 0.5
        scores = {"label_accuracy": float(np.mean(on == truth)),
                  "exact_match": float(np.mean((on == truth).all(axis=1)))}
        for j, label in enumerate(_names(model, on.shape[1])):
            tp = float(np.sum(on[:, j] & truth[:, j]))
            called, real = float(np.sum(on[:, j])), float(np.sum(truth[:, j]))
            scores[f"accuracy[{label}]"] = float(np.mean(on[:, j] == truth[:, j]))
            scores[f"f1[{label}]"] = 2 * tp / (called + real) if called + real else 1.0
        return scores

    @classmethod
    def truth(cls, model, y):
        """The labels each example really has."""
        rows = np.asarray(y).reshape(len(y), -1) > 0.5
        names = _names(model, rows.shape[1])
        return [[names[j] for j in np.flatnonzero(row)] for row in rows]

    @classmethod
    def report(cls, model, outputs, y, top=0):
        """Precision, recall and F1 per label (on: probability over THRESHOLD), with averages."""
        from archc.tasks.figures import labels_on

        on = sigmoid(outputs[score_output(model, outputs)]) > THRESHOLD                  # (N, L)
        return labels_on(np.asarray(y).reshape(on.shape), on, _names(model, on.shape[1]))

    @classmethod
    def match_classes(cls, model, ds, source):
        """The data's target columns in the model's label order when both carry names; every label needs its
        column and every column a label (a model without labels, or unnamed columns: as they are)."""
        from archc.data.classes import match, reorder_columns, show

        labels = [str(label) for label in (model.task or {}).get("labels") or []]
        if not labels or ds.classes is None:
            return ds
        found = match(ds.classes, labels)
        if found.missing or found.unknown:
            raise InputError(f"expected target columns named as the model's labels ({show(labels)}), received "
                             f"{show(list(ds.classes))}" + _differences(found), where=source)
        return reorder_columns(ds, found.positions, labels)

    @classmethod
    def records(cls, model, outputs, top=0):
        """The labels over 0.5 and their probabilities, per example."""
        name = score_output(model, outputs)
        probs = sigmoid(outputs[name]) if name is not None else None
        if probs is None or probs.ndim != 2:
            return super().records(model, outputs, top)
        names = _names(model, probs.shape[1])
        return [{"labels": [names[j] for j in np.flatnonzero(row > THRESHOLD)],
                 "probabilities": [float(row[j]) for j in np.flatnonzero(row > THRESHOLD)]} for row in probs]

    @classmethod
    def example(cls) -> Example:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((240, 6)).astype(np.float32)
        y = (x @ rng.standard_normal((6, 3)) > 0).astype(np.int64)                   # 3 labels, each a halfplane
        buf = io.BytesIO()
        np.savez(buf, x=x, y=y)
        return Example({"archc": 1, "model": {"name": "tags"}, "inputs": {"x": {"shape": [6]}},
                        "task": {"kind": "multilabel", "labels": ["a", "b", "c"]},
                        "layers": [{"op": "linear", "out_features": 16, "act": "relu"},
                                   {"op": "linear", "out_features": 3}],
                        "train": {"epochs": 1, "batch_size": 16},
                        "data": {"source": "npz:tags.npz"}},
                       infer=(("--input", "npz:{dir}/tags.npz"),), files={"tags.npz": buf.getvalue()})

    # ---- train ----
    def align(self, dataset):
        """Named target columns (an npz's `classes`) in [task] labels' order, which must name the same set;
        without labels the columns' names become the model's labels."""
        from archc.data.classes import match, reorder_columns, show

        if dataset.classes is None or self.spec_labels is None:
            return dataset
        found = match(dataset.classes, self.spec_labels)
        if found.missing or found.unknown:
            raise DataError(f"expected the target columns of data {dataset.name} ({show(list(dataset.classes))}), "
                            f"received labels {show(self.spec_labels)}" + _differences(found), where="task.labels",
                            hint="list the data's column names (any order) in [task] labels, or drop labels to "
                                 "take the data's")
        return reorder_columns(dataset, found.positions, self.spec_labels)

    def check(self, dataset) -> None:
        labels = self.out_type.shape[1]
        y = dataset.train.y
        if y.ndim != 2 or y.shape[1] != labels:
            raise DataError(f"expected targets [examples, {labels}] (the output '{self.output_name}' has {labels} "
                            f"labels), received {list(y.shape)}", where=f"data {dataset.name}",
                            hint="an npz: source with y of 0/1 rows")
        for name, split in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test)):
            if len(split) and not np.isin(split.y, (0, 1)).all():
                raise DataError(f"{name}: expected 0/1 targets, received {split.y[~np.isin(split.y, (0, 1))][0]}",
                                where=f"data {dataset.name}")

    def loss(self, out, y):
        target = y.float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        bce = F.binary_cross_entropy_with_logits(out.float(), target, reduction="none")   # (B, L)
        return bce.mean(dim=1).sum()

    def metric_sum(self, out, y):
        return ((out > 0) == (y > 0.5)).float().mean(dim=1).sum()
