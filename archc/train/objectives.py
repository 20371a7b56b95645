"""Loss and metric per task kind. A registry: OBJECTIVES[kind] is the class; a new task kind adds one class.

Losses are summed over the examples of a batch (not averaged): the loop divides by the global batch size,
so a batch split over N processes yields the same gradient as the whole batch in one process.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from archc.data import Dataset
from archc.errors import DataError, SpecError
from archc.graph.ir import Graph
from archc.spec.model import Spec


def _ends_in(graph: Graph, node_id: str) -> str:
    """'probs' or 'log_probs' when the node ends in a (log_)softmax, else 'logits' (as the exporter names them)."""
    node = next((n for n in graph.nodes if n.id == node_id), None)
    last = (node.act or node.op).name() if node is not None else ""
    return {"softmax": "probs", "log_softmax": "log_probs"}.get(last, "logits")


class Objective:
    """One task kind: which data task it loads, its loss, its metric and the checks run before training."""

    kind: ClassVar[str]
    data_task: ClassVar[str]          # the `task=` passed to archc.data.load
    metric: ClassVar[str]             # name of the metric, e.g. "accuracy"
    higher_is_better: ClassVar[bool]
    losses: ClassVar[tuple[str, ...]]  # the [train] loss names it accepts; the first is the default

    def __init__(self, spec: Spec, graph: Graph) -> None:
        out_name = spec.task.output or next(iter(graph.outputs))
        if out_name not in graph.outputs:
            raise SpecError(f"expected one of the outputs {', '.join(graph.outputs)}, received '{out_name}'",
                            where="task.output")
        self.output_index = list(graph.outputs).index(out_name)
        self.output_name = out_name
        self.out_type = graph.type_of(graph.outputs[out_name])
        self.out_kind = _ends_in(graph, graph.outputs[out_name])
        loss = spec.train.loss or self.losses[0]
        if loss not in self.losses:
            raise SpecError(f"expected a loss for {self.kind} ({', '.join(self.losses)}), received '{loss}'",
                            where="train.loss")
        self.loss_name = loss
        self.label_smoothing = spec.train.label_smoothing
        # the spec input the data's examples feed (checked against the data's shape and dtype); None for task
        # kinds that check and feed several inputs themselves (graphs)
        self.data_input: str | None = next(iter(graph.inputs))

    def select(self, outputs: Any) -> torch.Tensor:
        """The output the task reads, from the module's tensor or tuple."""
        return outputs if isinstance(outputs, torch.Tensor) else outputs[self.output_index]

    def check(self, dataset: Dataset) -> None:
        """Raise DataError when the data cannot train this model (before any step runs)."""

    def splits(self, dataset: Dataset, device: torch.device) -> dict[str, Any]:
        """train/val/test as the loop reads them: len(split) examples, split.take(idx) -> (x, y) for forward.
        By default the examples' arrays on the device; graph tasks feed whole graphs (archc.train.graphs)."""
        from archc.train.batches import DeviceSplit
        return {k: DeviceSplit.of(getattr(dataset, k), device) for k in ("train", "val", "test")}

    def forward(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, target) for a batch: by default net(x) against y. Task kinds whose model input is built
        from the data (diffusion: noised images and timesteps) or that read several inputs override this."""
        return self.select(net(x)), y

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed over the batch: a scalar."""
        raise NotImplementedError

    def metric_sum(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The metric summed over the batch (the loop divides by the number of examples)."""
        raise NotImplementedError

    def better(self, value: float, best: float | None, quantity: str) -> bool:
        """Is `value` of the monitored quantity ('metric' or 'loss') an improvement over `best`?"""
        if best is None or math.isnan(best):
            return not math.isnan(value)
        higher = self.higher_is_better if quantity == "metric" else False
        return value > best if higher else value < best

    def metadata(self) -> dict[str, Any]:
        """Extra `archc.<key>` ONNX metadata the task needs at inference (e.g. a tokenizer); none by default."""
        return {}

    def summary(self, loss: float, metric: float) -> dict[str, float]:
        """Extra test-split figures for the run's result, from the test loss and metric; none by default."""
        return {}


class Classification(Objective):
    """Cross-entropy with label smoothing over [batch, classes] outputs; metric: accuracy."""

    kind = "classification"
    data_task = "classification"
    metric = "accuracy"
    higher_is_better = True
    losses = ("cross_entropy",)

    def __init__(self, spec: Spec, graph: Graph) -> None:
        super().__init__(spec, graph)
        shape = self.out_type.shape
        if len(shape) != 2 or not isinstance(shape[1], int):
            raise SpecError(f"classification training expects the output '{self.output_name}' shaped "
                            f"[batch, classes], received {self.out_type.show()}", where="task.kind")
        self.classes = shape[1]

    def check(self, dataset: Dataset) -> None:
        for name, split in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test)):
            if len(split) and int(split.y.max()) >= self.classes:
                raise DataError(f"{name}: expected labels in 0..{self.classes - 1} (the output "
                                f"'{self.output_name}' has {self.classes} classes), received {int(split.y.max())}",
                                where=f"data {dataset.name}")

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        if self.out_kind == "probs":
            return out.float().clamp_min(1e-12).log()
        return out.float() if self.out_kind == "log_probs" else F.log_softmax(out.float(), dim=1)

    def loss(self, out, y):
        eps = self.label_smoothing
        if self.out_kind == "logits":
            return F.cross_entropy(out.float(), y, label_smoothing=eps, reduction="sum")
        logp = self.log_probs(out)  # (B, K)
        nll = F.nll_loss(logp, y, reduction="sum")
        return nll if eps == 0 else (1 - eps) * nll - eps * logp.mean(dim=1).sum()

    def metric_sum(self, out, y):
        return (out.argmax(dim=1) == y).sum()


class Regression(Objective):
    """Mean squared (default) or absolute error; metric: mean absolute error."""

    kind = "regression"
    data_task = "regression"
    metric = "mae"
    higher_is_better = False
    losses = ("mse", "mae")

    def check(self, dataset: Dataset) -> None:
        want = int(np.prod([d for d in self.out_type.features if isinstance(d, int)]))
        got = int(np.prod(dataset.train.y.shape[1:]))
        if want != got:
            raise DataError(f"expected {want} target value(s) per example (the output '{self.output_name}' "
                            f"{self.out_type.show()}), received {got}", where=f"data {dataset.name}")

    def loss(self, out, y):
        fn = F.mse_loss if self.loss_name == "mse" else F.l1_loss
        per_value = fn(out.float(), y.view_as(out).float(), reduction="none")
        return per_value.reshape(len(out), -1).mean(dim=1).sum()  # each example: the mean over its values

    def metric_sum(self, out, y):
        return (out.float() - y.view_as(out).float()).abs().reshape(len(out), -1).mean(dim=1).sum()


class LanguageModel(Objective):
    """Next-token cross-entropy over [batch, seq, vocab] outputs against y [batch, seq]; metric: bits per byte.

    Each example's loss is the mean over its positions (summed over the batch, as everywhere). With byte
    tokens the mean cross-entropy in nats over ln 2 is bits per byte; perplexity is exp(mean cross-entropy).
    """

    kind = "language_model"
    data_task = "language_model"
    metric = "bpb"
    higher_is_better = False
    losses = ("cross_entropy",)

    def __init__(self, spec: Spec, graph: Graph) -> None:
        super().__init__(spec, graph)
        shape = self.out_type.shape
        if len(shape) != 3 or not isinstance(shape[2], int):
            raise SpecError(f"language_model training expects the output '{self.output_name}' shaped "
                            f"[batch, seq, vocab], received {self.out_type.show()}", where="task.kind")
        self.vocab = shape[2]
        self.tokenizer: dict[str, Any] = {}
        self.baselines: dict[str, float] = {}

    def check(self, dataset: Dataset) -> None:
        """Targets must be token ids below the vocabulary; also notes the tokenizer and the held-out baselines."""
        for name, split in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test)):
            if len(split) and int(split.y.max()) >= self.vocab:
                raise DataError(f"{name}: expected token ids in 0..{self.vocab - 1} (the output "
                                f"'{self.output_name}' has {self.vocab} logits per position), received "
                                f"{int(split.y.max())}", where=f"data {dataset.name}")
        self.tokenizer = dict(getattr(dataset, "tokenizer", {}) or {})
        text = getattr(dataset, "text", None)
        if text and len(text.get("test", ())) and len(text.get("train", ())):
            from archc.data.text import baselines
            self.baselines = baselines(text["train"], text["test"])

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        """(B, T, V) log-probabilities from logits, probs or log_probs."""
        if self.out_kind == "probs":
            return out.float().clamp_min(1e-12).log()
        return out.float() if self.out_kind == "log_probs" else F.log_softmax(out.float(), dim=-1)

    def token_nll(self, out: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        """Cross-entropy per position: (B, T) in nats."""
        logp = self.log_probs(out)                                           # (B, T, V)
        nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)                 # (B, T)
        return nll if smoothing == 0 else (1 - smoothing) * nll - smoothing * logp.mean(dim=-1)

    def loss(self, out, y):
        return self.token_nll(out, y, self.label_smoothing).mean(dim=1).sum()

    def metric_sum(self, out, y):
        return (self.token_nll(out, y).mean(dim=1) / math.log(2)).sum()

    def metadata(self) -> dict[str, Any]:
        """The ONNX metadata generation needs: the tokenizer (kind, vocab_size, context)."""
        return {"tokenizer": self.tokenizer} if self.tokenizer else {}

    def summary(self, loss: float, metric: float) -> dict[str, float]:
        """Test figures besides loss and bpb: perplexity (per token) and the unigram/bigram baselines in bpb."""
        ppl = math.exp(loss) if loss < 700 else math.inf
        return {"perplexity": ppl, **self.baselines}


OBJECTIVES: dict[str, type[Objective]] = {"classification": Classification, "regression": Regression}
OBJECTIVES["language_model"] = LanguageModel


def objective_for(spec: Spec, graph: Graph) -> Objective:
    """The objective of the spec's [task] kind; SpecError when training does not support that kind yet."""
    cls = OBJECTIVES.get(spec.task.kind)
    if cls is None:
        raise SpecError(f"archc train supports task kinds {', '.join(OBJECTIVES)}; received '{spec.task.kind}'",
                        where="task.kind")
    return cls(spec, graph)
