"""The task base class and registry: one class per task kind holds its output rule, losses, metric, data,
ONNX output labels, `archc infer` modes, scoring and presentation (torch-free), and its training objective.

The class is used in two ways. Its classmethods are the torch-free half, run by `validate` (the infer pass
calls `Task.validate`), the exporter and `archc infer` (numpy only). An instance is the objective `archc train`
runs: built from a validated spec and graph, it computes the loss and metric in torch, imported on first use
(`torch`, `F` below), so importing a task module never imports torch.

Losses are summed over the examples of a batch (not averaged): the loop divides by the global batch size,
so a batch split over N processes yields the same gradient as the whole batch in one process.
"""
from __future__ import annotations

import importlib
import json
from collections import Counter
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from archc.errors import InputError, ModelError, ShapeError, SpecError
import archc.metadata as keys

if TYPE_CHECKING:  # archc.ops (every op, pydantic) is not imported by infer's side
    from archc.ops.base import TensorType
    from archc.data import Dataset, Split
    from archc.tasks.views import GraphView as Graph, ModelView as Model
    from archc.tasks.hooks import SplitBuilders

# The spec (archc.language.model.Spec) is not imported: it builds its `kind` choices from this registry.
SpecLike = Any


class _Lazy:
    """A module imported on first attribute access: objectives write `torch.randn`, validate never imports it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


np: Any = _Lazy("numpy")  # validate imports neither numpy nor torch; infer and train use them freely
torch: Any = _Lazy("torch")
F: Any = _Lazy("torch.nn.functional")

# `archc infer` modes and the flag that selects each: a task lists the ones its models support.
MODES = {"table": "--input", "run": "--input", "graph": "--input", "generate": "--prompt", "sample": "--num-samples"}
MODE_DOCS = {"table": "--input FILE|SOURCE (a table, scored on a labelled source)",
             "run": "--input FILE (the raw outputs for inputs given by name)",
             "graph": "--input graph:SOURCE|FILE.npz (whole graphs, scored on the split)",
             "generate": "--prompt TEXT (text generation)", "sample": "--num-samples N (sampling)"}


@dataclass(frozen=True)
class Example:
    """A tiny trainable spec of a kind, with the files its [data] source reads (written next to the spec), and
    the `archc infer` arguments that exercise its modes ({dir}: the folder of the spec and files). The registry
    test validates, trains (1 epoch), exports and infers it."""

    spec: dict[str, Any]
    infer: tuple[tuple[str, ...], ...]
    files: dict[str, str | bytes] = field(default_factory=dict)


@dataclass
class Labelled:
    """A data split ready to feed a model: feeds by input name, labels (None: unlabelled, predicted only), what it
    is, what reading it did that the user should hear of (files skipped, images converted), and each example's
    file name when it came from files."""

    feeds: dict[str, np.ndarray]
    y: np.ndarray | None
    description: str
    notes: list[str] = field(default_factory=list)
    names: list[str] | None = None
    rows: list[int] | None = None  # each example's row: its position in the source, or a file's line (a CSV's)


ALL = "all"  # `archc infer --split all`: every example of a source (train, val and test, in that order)


def task_output(graph: "Graph", spec: SpecLike) -> str:
    """The name of the output the task reads ([task] output, default: the first); SpecError when unknown."""
    name = spec.task.output or next(iter(graph.outputs))
    if name not in graph.outputs:
        raise SpecError(f"expected one of the outputs ({', '.join(graph.outputs)}), received '{name}'",
                        where="task.output")
    return name


class Task:
    """One task kind. Class attributes and classmethods: torch-free; an instance: the training objective."""

    kind: ClassVar[str] = ""          # "": the base, for models exported without a task (plain values)
    data_task: ClassVar[str | None] = None  # the `task=` passed to archc.data.load (None: what the data holds)
    metric: ClassVar[str] = ""        # name of the training metric, e.g. "accuracy"
    metric_unit: str = "examples"     # what metric_weight counts (an instance may count another unit: "bytes")
    higher_is_better: ClassVar[bool] = False
    losses: ClassVar[tuple[str, ...]] = ()  # the [train] loss names it accepts; the first is the default
    scores: ClassVar[bool] = False    # its output holds scores (labelled logits/probs/log_probs), not values
    own_inputs: ClassVar[bool] = False  # its objective builds the model's inputs (several, or unbatched)
    modes: ClassVar[tuple[str, ...]] = ("table",)  # the `archc infer` modes its models support (MODES)
    # the output's axes when it holds scores ("batch", "classes"): the rank, and a fixed-size last axis; None: values
    output_axes: ClassVar[tuple[str, ...] | None] = None
    score_noun: ClassVar[str] = "scores"
    noun: ClassVar[str] = "model"     # what its models are called in messages ("a language model")
    default: ClassVar[bool] = False   # the kind of a spec without [task] (exactly one class sets it itself)
    scales_targets: ClassVar[bool] = False  # standardizes its targets in training ([data] scale_target, `standardize`)
    smooths_labels: ClassVar[bool] = False  # its loss reads [train] label_smoothing (elsewhere it would be ignored)
    diffusion_recipe: ClassVar[bool] = False  # it reads [train] diffusion (the noise schedule)
    mixes_labels: ClassVar[bool] = False  # its loss takes soft targets ([data.augment] mixup / cutmix)
    # The table `archc infer` prints: (record key, cell text) columns; None: every key of the records.
    columns: ClassVar[tuple[tuple[str, Callable[[Any], str]], ...] | None] = None

    # ---- validate (torch-free): the rule train and infer share --------------------------------------------
    @classmethod
    def check_vocab(cls, graph: "Graph", spec: SpecLike, drawn: int | None) -> None:
        """Validate's check of the token ids the [data] source draws (`drawn`, None: not token ids) against the
        model; nothing by default (language_model's)."""
    @classmethod
    def validate(cls, graph: "Graph", spec: SpecLike) -> None:
        """Raise SpecError/ShapeError, located at task.*, train.loss or inputs, when the spec cannot be this kind."""
        name = task_output(graph, spec)
        loss = spec.train.loss
        if loss is not None and loss not in cls.losses:
            raise SpecError(f"expected a loss for {cls.kind} ({', '.join(cls.losses)}), received '{loss}'",
                            where="train.loss")
        cls.check_recipe(spec)
        cls.check_inputs(graph, spec)
        cls.check_output(name, graph.type_of(graph.outputs[name]), spec)
        data = spec.data
        if data is not None and data.scale_target and not cls.scales_targets:
            kinds = ", ".join(kind for kind, c in REGISTRY.items() if c.scales_targets)
            raise SpecError(f"expected scale_target unset or false for {cls.kind} (only {kinds} scales its targets), "
                            "received true", where="data.scale_target")
        if data is not None and data.augment.active():
            check_augment(cls, spec)

    @classmethod
    def check_recipe(cls, spec: SpecLike) -> None:
        """[train] settings this kind would ignore without a word are errors."""
        if spec.train.label_smoothing > 0 and not cls.smooths_labels:
            raise SpecError(f"expected label_smoothing = 0 for {cls.kind} (only {_kinds('smooths_labels')} smooth "
                            f"their labels), received {spec.train.label_smoothing}", where="train.label_smoothing")
        if spec.train.diffusion is not None and not cls.diffusion_recipe:
            raise SpecError(f"expected no [train] diffusion for {cls.kind} (only {_kinds('diffusion_recipe')} reads "
                            "it), received one", where="train.diffusion", hint="set [task] kind, or remove it")

    @classmethod
    def describe(cls, graph: "Graph", spec: SpecLike) -> str:
        """A line `archc validate` prints under its table: what the kind makes of the spec (none by default)."""
        return ""

    @classmethod
    def check_inputs(cls, graph: "Graph", spec: SpecLike) -> None:
        """The inputs this kind needs (by default: none beyond what training checks)."""

    @classmethod
    def check_output(cls, name: str, out: TensorType, spec: SpecLike) -> None:
        """The output the task reads: float32 values, or, when the kind declares `output_axes`, float32 scores of
        that rank whose last axis has a fixed size (one score per class / label / token), one per [task] label."""
        if cls.output_axes is None:
            if out.dtype != "float32":
                raise SpecError(f"expected output '{name}' to be float32 values for {cls.kind}, received "
                                f"{out.dtype} {out.show()}", where="task.kind")
            if spec.task.labels is not None:  # nothing would read them: `archc infer` showed the output's own name
                raise SpecError(f"expected no labels for {cls.kind} (the output '{name}' holds values, not scores), "
                                f"received {len(spec.task.labels)}", where="task.labels")
            return
        rank = len(cls.output_axes)
        if out.dtype != "float32" or out.rank != rank or not isinstance(out.shape[rank - 1], int):
            raise SpecError(f"{cls.kind} expects the output '{name}' shaped [{', '.join(cls.output_axes)}] (float32 "
                            f"{cls.score_noun}), received {out.dtype} {out.show()}", where="task.kind",
                            hint=cls.output_hint(out, spec))
        cls.check_labels(name, out, spec)

    @classmethod
    def output_hint(cls, out: TensorType, spec: SpecLike) -> str:
        """A hint for an output that breaks `output_axes` (none by default)."""
        return ""

    @classmethod
    def check_labels(cls, name: str, out: TensorType, spec: SpecLike) -> None:
        """[task] labels name the output's last axis, one per score."""
        labels = spec.task.labels
        twice = sorted(label for label, n in Counter(labels or []).items() if n > 1)
        if twice:  # each label names one output position: training and scoring match data classes by name
            raise SpecError(f"expected distinct labels, received {', '.join(map(repr, twice))} more than once",
                            where="task.labels")
        if labels is not None and out.shape[-1] != len(labels):
            raise ShapeError(f"expected output '{name}' to have {len(labels)} classes (one per label), "
                             f"received {out.show()}", where="task.labels")

    # ---- export -------------------------------------------------------------------------------------------
    @classmethod
    def output_kind(cls, graph: "Graph", name: str, spec: SpecLike) -> str:
        """What an output holds in the ONNX metadata: the task's scores are logits (or probs / log_probs after a
        (log_)softmax); anything else is plain values."""
        if not cls.scores or name != task_output(graph, spec):
            return "values"
        return graph.score_kind(graph.outputs[name])

    # ---- archc infer (numpy) ------------------------------------------------------------------------------
    @classmethod
    def load_split(cls, model: "Model", source: str, split: str = "test", target: str | None = None) -> Labelled:
        """The split of `source` the model was scored on in training (split settings from the spec's [data];
        `target`: another target column than the spec's)."""
        from archc.data import load

        if len(model.inputs) != 1:
            raise InputError(f"expected a single-input model to read a data source, received inputs "
                             f"{', '.join(model.inputs)}", hint="pass an .npz with one array per input")
        options = cls.load_options(model)
        options["defaults"] = image_options(model) | data_defaults(model) | options.get("defaults", {})
        ds = load(source, task=cls.data_task, **data_settings(model, split, target), **options)
        return cls.labelled(model, ds, source, split)

    @classmethod
    def labelled(cls, model: "Model", ds: "Dataset", source: str, split: str = "test") -> Labelled:
        """One split of `ds`, loaded from `source` as load_split loads it (or already, by `archc train`: the run's
        report reads no file again), fed to the model's single input."""
        part = split_of(cls.match_classes(model, ds, source), split, source)
        (name,) = model.inputs
        what = "every example" if split == ALL else f"{split} split"
        rows = None if part.index is None else part.index.tolist()
        names = [ds.names[i] for i in rows] if ds.names is not None and rows is not None else None
        return Labelled({name: part.x}, part.y, f"{source}, {what}, {len(part)} examples", list(ds.notes), names,
                        None if names is not None else rows)

    @classmethod
    def match_classes(cls, model: "Model", ds: "Dataset", source: str) -> "Dataset":
        """The data with its labels in the model's output order (classes by name); as loaded by default."""
        return ds

    @classmethod
    def load_options(cls, model: "Model") -> dict[str, Any]:
        """Extra keyword arguments for archc.data.load (e.g. a language model's context)."""
        return {}

    @classmethod
    def score(cls, model: "Model", outputs: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
        """The task's output against the labels: mean squared and absolute error by default."""
        values = outputs[next(iter(outputs))]
        pred = values.reshape(len(y), -1).astype(np.float64)
        target = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if pred.shape != target.shape:
            raise InputError(f"expected outputs shaped like the labels {list(target.shape)}, "
                             f"received {list(pred.shape)}")
        return {"mse": float(np.mean((pred - target) ** 2)), "mae": float(np.mean(np.abs(pred - target)))}

    @classmethod
    def records(cls, model: "Model", outputs: dict[str, np.ndarray], top: int = 0) -> list[dict]:
        """One dict per example: raw values by output name by default."""
        return value_records(outputs)

    @classmethod
    def truth(cls, model: "Model", y: np.ndarray) -> list[Any] | None:
        """The true label of each example as the table and records show it (`true`); None: the kind shows none."""
        return None

    @classmethod
    def report(cls, model: "Model", outputs: dict[str, np.ndarray], y: np.ndarray, top: int = 0) -> dict | None:
        """The outputs against the labels in detail (archc.runtime.report: per-class figures and a confusion
        matrix, residuals, ...), for `--report DIR` and the run folder; None: the kind makes none."""
        return None

    @classmethod
    def cells(cls, model: "Model", outputs: dict[str, np.ndarray]) -> tuple[list[str], list[list[str]]] | None:
        """The `archc infer` table as (header, rows of cell text) when the kind lays it out itself (embedding: one
        row per vector); None: from the records and `columns`."""
        return None

    @classmethod
    def main_output(cls, model: "Model") -> str | None:
        """The output `infer -o FILE.npy` writes (a .npy holds one array): the one the task reads."""
        return recorded_output(model)

    # ---- train (torch): the objective ---------------------------------------------------------------------
    def __init__(self, spec: SpecLike, graph: "Graph") -> None:
        out_name = task_output(graph, spec)
        self.output_index = list(graph.outputs).index(out_name)
        self.output_name = out_name
        self.out_type = graph.type_of(graph.outputs[out_name])
        self.out_kind = graph.score_kind(graph.outputs[out_name])
        self.loss_name = spec.train.loss or self.losses[0]
        self.label_smoothing = spec.train.label_smoothing
        self.spec_labels: list[str] | None = spec.task.labels
        # the spec input the data's examples feed (checked against the data's shape and dtype); None for task
        # kinds that check and feed several inputs themselves (graphs)
        self.data_input: str | None = next(iter(graph.inputs))

    def select(self, outputs: Any) -> Any:
        """The output the task reads, from the module's tensor or tuple."""
        return outputs if isinstance(outputs, torch.Tensor) else outputs[self.output_index]

    def align(self, dataset: "Dataset") -> "Dataset":
        """The data with its labels in the output's order and `classes` the model's labels (DataError when they
        cannot agree); as loaded by default."""
        return dataset

    def check(self, dataset: "Dataset") -> None:
        """Raise DataError when the data cannot train this model (before any step runs)."""

    def standardize(self, train: "Split", recorded: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Fit the targets' standardization to the training split (or take `recorded`, a resumed run's statistics)
        and train on (y - mean) / std from now on, with the metric in the targets' own units. Returns the
        statistics by output name ({output: {"mean", "std"}}): the export restores that output to the targets'
        units with them (archc.export.restore). None, the default: the kind trains on its targets as loaded."""
        return None

    def splits(self, dataset: "Dataset", device: Any, build: "SplitBuilders", **reading: Any) -> dict[str, Any]:
        """train/val/test as the loop reads them (archc.train.splits' protocol), made by train's `build`: by default
        the examples' arrays on the device, or read per batch by loader workers (`reading`: its feed, workers and
        on_error); graph tasks feed whole graphs."""
        return {k: build.examples(getattr(dataset, k), device, **reading) for k in build.names}

    def forward(self, net: Any, x: Any, y: Any, training: bool) -> tuple[Any, Any]:
        """(output, target) for a batch: by default net(x) against y. Task kinds whose model input is built
        from the data (diffusion: noised images and timesteps) or that read several inputs override this."""
        return self.select(net(x)), y

    def loss(self, out: Any, y: Any) -> Any:
        """Summed over the batch: a scalar tensor."""
        raise NotImplementedError

    def metric_sum(self, out: Any, y: Any) -> Any:
        """The metric summed over the batch (the loop divides by the sum of metric_weight: the examples)."""
        raise NotImplementedError

    def metric_weight(self, y: Any) -> Any:
        """What the loop divides the metric's sum by, for a batch: its examples by default (a language model with a
        tokenizer: the bytes its targets stand for, counted in `metric_unit`)."""
        return len(y)

    def better(self, value: float, best: float | None, quantity: str, loss: float | None = None,
               best_loss: float | None = None) -> bool:
        """Is `value` of the monitored quantity ('metric' or 'loss') an improvement over `best`? With 'last',
        every finite epoch is: the final weights are kept (diffusion: see specs/unet_ddpm_digits.toml). A tie is
        broken by the validation loss (`loss` against the best epoch's `best_loss`), then by the earlier epoch:
        on a tiny validation split accuracy 1.0 ties for many epochs while the loss still falls."""
        if quantity == "last" or best is None or math.isnan(best):
            return not math.isnan(value)
        higher = self.higher_is_better if quantity == "metric" else False
        if value != best:
            return value > best if higher else value < best
        return loss is not None and best_loss is not None and loss < best_loss

    def metadata(self) -> dict[str, Any]:
        """Extra `archc.<key>` ONNX metadata the task needs at inference (e.g. a tokenizer); none by default."""
        return {}

    def files(self) -> dict[str, str]:
        """Files (name -> text) the run's folder and an exported model's folder carry beside model.onnx, named by
        the metadata (e.g. a tokenizer.json); none by default."""
        return {}

    def summary(self, loss: float, metric: float) -> dict[str, float]:
        """Extra test-split figures for the run's result, from the test loss and metric; none by default."""
        return {}

    # ---- the registry test --------------------------------------------------------------------------------
    @classmethod
    def example(cls) -> Example:
        """A tiny spec of this kind and its data (see Example)."""
        raise NotImplementedError(f"task {cls.kind} declares no example")


REGISTRY: dict[str, type[Task]] = {}


def _kinds(flag: str) -> str:
    """The registered kinds whose class sets `flag` ('smooths_labels'), for messages."""
    return ", ".join(kind for kind, c in REGISTRY.items() if getattr(c, flag))


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: add a task kind to the registry under its `kind`."""
    assert cls.kind and cls.kind not in REGISTRY, f"task kind {cls.kind!r} registered twice"
    REGISTRY[cls.kind] = cls
    return cls


def task_class(kind: str) -> type[Task]:
    """The registered class of a task kind; SpecError naming the known kinds otherwise."""
    cls = REGISTRY.get(kind)
    if cls is None:
        raise SpecError(f"archc supports task kinds {', '.join(REGISTRY)}; received '{kind}'", where="task.kind")
    return cls


def objective_for(spec: SpecLike, graph: "Graph") -> Task:
    """The training objective of the spec's [task] kind, after the kind's rule (as validate runs it)."""
    cls = task_class(spec.task.kind)
    cls.validate(graph, spec)
    return cls(spec, graph)


def default_kind() -> str:
    """The kind a spec without a [task] table has."""
    (kind,) = [kind for kind, cls in REGISTRY.items() if vars(cls).get("default")]  # set, not inherited
    return kind


def losses() -> tuple[str, ...]:
    """Every loss name some task kind accepts (the spec's [train] loss choices)."""
    return tuple(dict.fromkeys(name for cls in REGISTRY.values() for name in cls.losses))


# ---- infer helpers (numpy) ----------------------------------------------------------------------------------

def for_model(model: "Model", strict: bool = True) -> type[Task]:
    """The task class of an exported model's recorded kind: the base Task (values) for models without archc
    metadata; ModelError for a kind this archc does not know (strict), so it is never scored by another rule."""
    kind = (model.task or {}).get("kind")
    if kind is None:
        return Task
    cls = REGISTRY.get(str(kind))
    if cls is None and strict:
        raise ModelError(f"expected a model of a known task kind ({', '.join(REGISTRY)}), received task "
                         f"{kind!r}", where=model.path or "model", hint="a newer archc may have written it")
    return cls or Task


def makes_report(cls: type[Task]) -> bool:
    """Whether a task kind writes a report (overrides `Task.report`): what `archc train` checks before reading the
    test split again for it."""
    return cls.report.__func__ is not Task.report.__func__  # type: ignore[attr-defined]


def check_mode(model: "Model", flag: str) -> None:
    """InputError when the model's task supports no `archc infer` mode run by `flag` (--input, --prompt,
    --num-samples); models without a recorded task, or of a kind this archc does not know, are tried in any mode
    (the mode's own checks then speak; scoring refuses an unknown kind)."""
    cls = REGISTRY.get(str((model.task or {}).get("kind")))
    if cls is None:
        return
    if any(MODES[m] == flag for m in cls.modes):
        return
    nouns = sorted({t.noun for t in REGISTRY.values() if any(MODES[m] == flag for m in t.modes)})
    supported = "; ".join(MODE_DOCS[m] for m in cls.modes)
    raise InputError(f"{flag}: expected a {' or a '.join(nouns) or 'model that supports it'}, received a "
                     f"{cls.kind} model, which supports {supported}", where=model.path or "model")


def recorded_output(model: "Model") -> str | None:
    """The output the task reads in an exported model: the recorded spec's [task] output, else the first."""
    try:  # a foreign or hand-edited model: its outputs still run, in their own order
        spec = json.loads(model.metadata.get(keys.SPEC, "{}") or "{}")
    except (ValueError, RecursionError):
        spec = {}
    task = spec.get("task") if isinstance(spec, dict) else None
    name = task.get("output") if isinstance(task, dict) else None
    return name if isinstance(name, str) and name in model.outputs else next(iter(model.outputs), None)


def data_settings(model: "Model", split: str = "test", target: str | None = None) -> dict[str, Any]:
    """The split settings of the spec's [data] recorded in the model: the split `archc train` scored (`all`: no
    examples held out, so the train split holds every one in the source's order; `target`: `archc infer --target`,
    in place of the recorded [data] target)."""
    spec = json.loads(model.metadata.get(keys.SPEC, "{}") or "{}")
    data = spec.get("data") or {}
    held = (0.0, 0.0) if split == ALL else (data.get("val_fraction", 0.1), data.get("test_fraction", 0.2))
    return {"target": target or data.get("target"), "val_fraction": held[0], "test_fraction": held[1],
            "seed": data.get("split_seed", 0)}


def data_defaults(model: "Model") -> dict[str, Any]:
    """Source options the spec's [data] recorded in the model sets for every split, as `archc train` read them:
    `in_memory` (a split `archc train` read per batch is not decoded whole here either); {} when unset."""
    spec = json.loads(model.metadata.get(keys.SPEC, "{}") or "{}")
    in_memory = (spec.get("data") or {}).get("in_memory")
    return {} if in_memory is None else {"in_memory": in_memory}


def split_of(ds: "Dataset", split: str, source: str) -> Any:
    """One split of a loaded Dataset, or (`all`) its train, val and test examples together (a lazy source's still
    lazy); InputError when empty."""
    if split == ALL:
        from archc.data.dataset import Split
        from archc.data.lazy import concat

        parts = [p for p in (ds.train, ds.val, ds.test) if len(p)]  # lazy ones stay lazy: nothing read here
        index = None if any(p.index is None for p in parts) else np.concatenate([p.index for p in parts])
        if index is not None and len(np.unique(index)) < len(index):  # a test split of its own arrays (x_test):
            index = None  # positions in two arrays, no row of one source
        part = parts[0] if len(parts) == 1 else Split(concat([p.x for p in parts]),
                                                      np.concatenate([p.y for p in parts]), index)
    else:
        part = getattr(ds, split)
    if len(part) == 0:
        raise InputError(f"expected examples in the {split} split of {source}, received none")
    return part


def image_options(model: "Model") -> dict[str, Any]:
    """channels and size ("HxW") of a single [batch, C, H, W] input with fixed sizes: what images: sources convert
    to, as `archc train` converts them to the spec's input (archc.data.images); {} otherwise."""
    from archc.data.images import options_for

    pixels = keys.pixel_input(model.metadata)
    if pixels is not None:  # a pixel front's uint8 [batch, H, W, C]: images read as for the plain model
        return options_for(pixels[1])
    shapes = [sig.shape for sig in model.inputs.values()]
    return options_for(shapes[0][1:]) if len(shapes) == 1 and shapes[0] else {}


def plain(value: np.ndarray) -> Any:
    """A per-example value as a Python scalar (size one) or nested list."""
    arr = np.asarray(value)
    return arr.reshape(()).item() if arr.size == 1 else arr.tolist()


def value_records(outputs: dict[str, np.ndarray]) -> list[dict]:
    """Per example {output_name: value}; one record of whole arrays when outputs share no batch axis."""
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    lengths = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if not arrays:
        return []
    if len(lengths) != 1 or None in lengths:
        return [{k: plain(a) for k, a in arrays.items()}]
    n = lengths.pop()
    return [{k: plain(a[i]) for k, a in arrays.items()} for i in range(n)]


def score_output(model: "Model", outputs: dict[str, np.ndarray]) -> str | None:
    """The output holding the task's scores: the first with a score kind, else the first output."""
    for name in outputs:
        sig = model.outputs.get(name)
        if sig is not None and sig.kind in ("logits", "probs", "log_probs"):
            return name
    return next(iter(outputs), None)


def check_augment(kind: type, spec: SpecLike) -> None:
    """[data.augment] needs one float [C, H, W] input of fixed sizes; mixing needs a kind that takes soft
    targets; saturation, hue and policies need 3 channels (kornia's colour ops work in RGB/HSV)."""
    aug = spec.data.augment
    if aug.mixing() and not kind.mixes_labels:
        raise SpecError(f"expected mixup = 0 and cutmix = 0 for {kind.kind} (only {_kinds('mixes_labels')} take "
                        f"mixed targets), received mixup = {aug.mixup}, cutmix = {aug.cutmix}",
                        where="data.augment.mixup" if aug.mixup else "data.augment.cutmix")
    images = [(name, i) for name, i in spec.inputs.items() if i.columns is None]
    if len(images) != 1:
        raise SpecError(f"expected one image input for [data.augment], received {len(images)} inputs "
                        f"({', '.join(spec.inputs)})", where="data.augment")
    name, inp = images[0]
    shape = inp.shape or []
    if inp.dtype != "float32" or len(shape) != 3 or not all(isinstance(d, int) for d in shape) or not inp.batched:
        raise SpecError(f"expected a float32 [C, H, W] input of fixed sizes for [data.augment], received inputs.{name} "
                        f"{inp.dtype} {shape}", where="data.augment", hint="augmentation applies to images only")
    if aug.needs_rgb() and shape[0] != 3:
        what = "a policy" if aug.policy != "none" else "color_jitter saturation/hue"
        raise SpecError(f"expected 3 channels for {what}, received {shape[0]} (inputs.{name} {shape})",
                        where="data.augment.policy" if aug.policy != "none" else "data.augment.color_jitter")
