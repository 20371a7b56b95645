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
from archc.language.model import Spec


def _ends_in(graph: Graph, node_id: str) -> str:
    """'probs' or 'log_probs' when the node ends in a score-normalizing op, else 'logits' (as the exporter says)."""
    return graph.score_kind(node_id)


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
        By default the examples' arrays on the device; graph tasks feed whole graphs (archc.train.gnn)."""
        from archc.train.splits import DeviceSplit
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
        """Is `value` of the monitored quantity ('metric' or 'loss') an improvement over `best`? With 'last',
        every finite epoch is: the final weights are kept (diffusion: see specs/unet_ddpm_digits.toml)."""
        if quantity == "last" or best is None or math.isnan(best):
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


class Diffusion(Objective):
    """DDPM noise prediction: the model maps (x_t, t) to the noise eps that made x_t from a clean image x_0.

    Images come from the source in its range (e.g. [0, 1]) and are scaled to [-1, 1]; t ~ U{0..T-1}, eps ~ N(0, I),
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps. Loss and metric: the per-example mean squared error
    of the predicted noise. The exported model is the denoiser; its metadata carries the schedule and scaling.
    """

    kind = "diffusion"
    data_task = None  # type: ignore[assignment]  # images with any labels (ignored)
    metric = "mse"
    higher_is_better = False
    losses = ("mse",)
    EVAL_SEED = 0  # validation draws the same t and eps every epoch, so epochs compare fairly

    def __init__(self, spec: Spec, graph: Graph) -> None:
        from archc.language.model import DiffusionRecipe
        from archc.train.diffusion import Schedule

        super().__init__(spec, graph)
        times = [n for n, t in graph.inputs.items() if t.batched and t.features in ((), (1,))]
        images = [n for n, t in graph.inputs.items() if n not in times]
        if len(graph.inputs) != 2 or len(times) != 1 or len(images) != 1:
            shown = ", ".join(f"{n} {t.show()}" for n, t in graph.inputs.items())
            raise SpecError(f"diffusion training expects two inputs, a noised image [batch, ...] and its timestep "
                            f"[batch] or [batch, 1], received {shown}", where="inputs")
        self.order, self.time_input, self.data_input = list(graph.inputs), times[0], images[0]
        self.time_type = graph.inputs[self.time_input]
        image = graph.inputs[self.data_input]
        if self.out_type.shape != image.shape:
            raise SpecError(f"diffusion training expects the output '{self.output_name}' shaped like the image "
                            f"{image.show()} (the predicted noise), received {self.out_type.show()}",
                            where="task.kind")
        if spec.data is not None and spec.data.normalize:
            raise SpecError("expected normalize = false for diffusion, received true", where="data.normalize",
                            hint="images are scaled to [-1, 1] from the source's range by the objective")
        recipe = spec.train.diffusion or DiffusionRecipe()
        self.schedule = Schedule.of(recipe.schedule, recipe.steps)
        self.data_range = (0.0, 1.0)

    def check(self, dataset: Dataset) -> None:
        """Record the data's range: the sources' [0, 1], widened when the training images exceed it."""
        x = dataset.train.x
        lo, hi = min(0.0, float(x.min())), max(1.0, float(x.max()))
        self.data_range = (lo, hi)

    def forward(self, net, x, y, training):
        lo, hi = self.data_range
        x0 = (x.float() - lo) * (2.0 / (hi - lo)) - 1.0                             # (B, C, H, W) in [-1, 1]
        g = None if training else torch.Generator(device=x.device).manual_seed(self.EVAL_SEED)
        t = torch.randint(0, self.schedule.steps, (len(x0),), device=x.device, generator=g)   # (B,)
        eps = torch.randn(x0.shape, device=x.device, generator=g)                   # (B, C, H, W)
        feeds = {self.data_input: self.schedule.noised(x0, t, eps),
                 self.time_input: t.to(torch.float32 if self.time_type.dtype == "float32" else torch.int64)
                 .view(len(t), *self.time_type.features)}                           # (B,) or (B, 1)
        return self.select(net(*[feeds[n] for n in self.order])), eps

    def loss(self, out, y):
        return F.mse_loss(out.float(), y.float(), reduction="none").reshape(len(out), -1).mean(dim=1).sum()

    def metric_sum(self, out, y):
        return self.loss(out, y)

    def metadata(self) -> dict[str, Any]:
        """archc.diffusion: T, the schedule and its betas, and how images map to the model's [-1, 1]."""
        return {"diffusion": self.schedule.metadata() | {
            "prediction": "epsilon", "data_range": list(self.data_range), "model_range": [-1.0, 1.0],
            "image_input": self.data_input, "timestep_input": self.time_input}}


class _GraphTask(Classification):
    """Classification over whole-graph inputs fed by role (node features, edge_index, graph ids)."""

    def __init__(self, spec: Spec, graph: Graph) -> None:
        from archc.data.gnn import input_roles

        super().__init__(spec, graph)
        try:
            self.roles = input_roles({n: (t.shape, t.dtype) for n, t in graph.inputs.items()})
        except DataError as e:
            raise SpecError(e.message, where="inputs") from None
        if spec.data is not None and spec.data.normalize:
            raise SpecError(f"expected normalize = false for {self.kind}, received true", where="data.normalize")
        self.order, self.data_input = list(graph.inputs), None
        self.features = graph.inputs[self.roles["x"]].shape[-1]

    def check(self, dataset: Dataset) -> None:
        from archc.data.gnn import GraphDataset

        if not isinstance(dataset, GraphDataset) or dataset.task != self.kind:
            raise DataError(f"expected {self.kind} data from a graph: source, received {dataset.task} data",
                            where=f"data {dataset.name}", hint="e.g. graph:karate, graph:synthetic, graph:FILE.npz")
        if dataset.example_shape != (self.features,):
            raise DataError(f"expected node features [nodes, {self.features}] (the spec's input "
                            f"'{self.roles['x']}'), received [nodes, {dataset.example_shape[0]}]",
                            where=f"data {dataset.name}")
        super().check(dataset)

    def splits(self, dataset: Dataset, device: torch.device) -> dict[str, Any]:
        from archc.train.gnn import graph_splits
        return graph_splits(dataset, self.roles, device)  # type: ignore[arg-type]

    def forward(self, net, x, y, training):
        out = self.select(net(*x.args(self.order)))                                  # (nodes or graphs, K)
        return (out if x.rows is None else out[x.rows]), y


class NodeClassification(_GraphTask):
    """Per-node classes of one graph: every step runs the whole graph; the split's nodes feed loss and accuracy."""

    kind = "node_classification"
    data_task = "node_classification"


class GraphClassification(_GraphTask):
    """Per-graph classes: each step collates batch_size graphs into x, edge_index and a batch vector."""

    kind = "graph_classification"
    data_task = "graph_classification"

    def __init__(self, spec: Spec, graph: Graph) -> None:
        super().__init__(spec, graph)
        if "batch" not in self.roles:
            raise SpecError("graph_classification expects a batch input: the graph id of every node, int64 "
                            "[nodes] with vocab = \"graphs\"", where="inputs",
                            hint="pool per graph with global_mean_pool from [features, batch]")


OBJECTIVES: dict[str, type[Objective]] = {"classification": Classification, "regression": Regression}
OBJECTIVES["language_model"] = LanguageModel
OBJECTIVES |= {"diffusion": Diffusion, "node_classification": NodeClassification,
               "graph_classification": GraphClassification}


def objective_for(spec: Spec, graph: Graph) -> Objective:
    """The objective of the spec's [task] kind; SpecError when training does not support that kind yet."""
    cls = OBJECTIVES.get(spec.task.kind)
    if cls is None:
        raise SpecError(f"archc train supports task kinds {', '.join(OBJECTIVES)}; received '{spec.task.kind}'",
                        where="task.kind")
    return cls(spec, graph)
