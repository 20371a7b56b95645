"""Training data: load the [data] source, check it against the spec's input and the task, normalize it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from archc.data import Dataset, Split, check_shape, load, normalization
from archc.data.dataset import subset
from archc.errors import DataError
from archc.export.restore import KEY as TARGET_SCALE
from archc.graph.bounds import fits, interval
from archc.graph.ir import Graph
from archc.tasks import Task
from archc.tasks.base import makes_report
from archc.tasks.hooks import SplitBuilders
from archc.train.recipe import Setup
from archc.train.run_dir import say
from archc.data.lazy import is_lazy
from archc.train.loader import default_workers
from archc.train.splits import Examples, Feed

if TYPE_CHECKING:
    from archc.data.columns import Request, Table

CACHE = ".archc-cache"  # beside the run folder: the sources' prepared data (only those that declare a `cache` option)


def context_of(setup: Setup) -> int | None:
    """Tokens per window for text: sources: the size of a [seq] input's axis (fixed, or its [axes] entry)."""
    features = setup.graph.inputs[setup.input_name].features
    if len(features) != 1:
        return None
    (seq,) = features
    return seq if isinstance(seq, int) else setup.graph.sizes.get(seq)


def image_shape_of(setup: Setup) -> dict[str, Any]:
    """channels and size ("HxW") of a [C, H, W] input with fixed sizes: images: sources convert to them, as
    `archc infer` converts raw image files (archc.data.images); {} for other inputs."""
    from archc.data.images import options_for

    return options_for(setup.graph.inputs[setup.input_name].features)


def cache_of(setup: Setup) -> str:
    """Where sources that keep what they prepared (text: token files, archc.data.tokens) keep it: a folder beside
    the run folder, so `--resume` and the next run on the same data reuse it."""
    return str(setup.run_dir.root.parent / CACHE)


def check_ids(dataset: Dataset, name: str, vocab: int | str | None) -> None:
    """Ids of an int64 input lie in [0, vocab): its declared vocab, or the smallest table it feeds (infer sets
    it); an id beyond an embedding table would fail only inside the forward pass."""
    if not isinstance(vocab, int):
        return
    for split, part in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test)):
        if len(part) and (int(part.x.min()) < 0 or int(part.x.max()) >= vocab):
            bad = int(part.x.max()) if int(part.x.max()) >= vocab else int(part.x.min())
            raise DataError(f"{split}: expected ids of input '{name}' in 0..{vocab - 1} (its vocab, within the "
                            f"tables it indexes), received {bad}", where=f"data {dataset.name}")


def columns_request(setup: Setup, fitted: "Table | None" = None) -> "Request | None":
    """What a tabular input asks the source for: its declared columns, fitted on the training split (or `fitted`,
    a resumed run's table); None for any other input."""
    from archc.data.columns import Request

    name = setup.input_name
    columns = setup.graph.columns.get(name) if name is not None else None
    return Request(name, columns, fitted) if columns else None


def recorded_table(run_dir: Any) -> "Table | None":
    """The fitted table a run recorded in its export.json as it started (None: none recorded): a resumed run
    encodes its data as the weights it resumes were trained on."""
    from archc.data.columns import Table

    if not run_dir.path("export").is_file():
        return None
    recorded = run_dir.read_json("export").get("columns")
    if recorded is None:
        return None
    try:
        return Table.from_json(recorded)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"expected the fitted columns archc recorded, received a table that cannot be read "
                        f"({type(e).__name__}: {e})", where=str(run_dir.path("export"))) from None


def recorded_scale(run_dir: Any) -> dict:
    """The target statistics a run recorded in its export.json as it started ({}: none, the run trained on its
    targets as loaded, or an archc before export.json wrote it): a resumed run keeps the scale its weights learnt."""
    if not run_dir.path("export").is_file():
        return {}
    scale = run_dir.read_json("export").get(TARGET_SCALE) or {}
    if not isinstance(scale, dict):
        raise DataError(f"expected {TARGET_SCALE} as {{output: {{mean, std}}}}, received {scale!r:.200}",
                        where=str(run_dir.path("export")))
    return scale


def check_axes(dataset: Dataset, graph: Graph, name: str) -> None:
    """The examples' sizes of the input's symbolic axes inside the bounds its layers put on them (a position
    table's rows: a text window or an npz sequence longer than max_len failed in the first step, exit 3), and one
    size per symbol."""
    seen: dict[str, int] = {}
    for axis, size in zip(graph.inputs[name].features, dataset.example_shape):
        if not isinstance(axis, str):
            continue
        if seen.setdefault(axis, size) != size:
            raise DataError(f"expected one size for axis '{axis}' of the spec's input '{name}', received {seen[axis]} "
                            f"and {size}", where=f"data {dataset.name}")
        if not fits(graph, axis, size):
            low, high = interval(graph, axis)
            why = "; ".join(f"{lim.where}: {lim.why}" for lim in graph.axis_limits.get(axis, ()))
            want = f"{low}..{high}" if high is not None else f"at least {low}"
            raise DataError(f"expected examples whose axis '{axis}' (the spec's input '{name}') is {want} ({why}), "
                            f"received {size}", where=f"data {dataset.name}",
                            hint=f"give the data windows of at most {high}" if high is not None else "")


def load_checked(setup: Setup, objective: Task, fitted: "Table | None" = None) -> Dataset:
    """Load the [data] source and check it against the spec's input and the task before training. A tabular
    input's columns are read by name and fitted on the training split (or encoded with `fitted`). Sources that declare
    a `cache` option keep what they prepare in `cache_of(setup)` (defaults fill only declared options)."""
    d = setup.spec.data
    assert d is not None
    request = columns_request(setup, fitted)
    dataset = load(d.source, task=objective.data_task, target=d.target, val_fraction=d.val_fraction,
                   test_fraction=d.test_fraction, seed=d.split_seed, root=setup.data_root,
                   defaults={"context": context_of(setup), "cache": cache_of(setup), "in_memory": d.in_memory}
                   | image_shape_of(setup),
                   **({"columns": request} if request else {}))
    name = objective.data_input
    if name is not None:  # None: the objective feeds several inputs and checks them itself (graphs)
        expected = setup.graph.inputs[name]
        check_shape(dataset, expected.features, name)
        check_axes(dataset, setup.graph, name)
        got = "int64" if dataset.train.x.dtype.kind in "iu" else "float32"
        if got != expected.dtype:
            raise DataError(f"expected {expected.dtype} examples (the spec's input '{name}'), received {got}",
                            where=f"data {dataset.name}")
        check_ids(dataset, name, setup.graph.vocab.get(name))
    try:  # class ids in the output's order, classes the model's labels
        dataset = objective.align(dataset)
    except DataError as e:
        raise e.located(setup.file) from None  # it may point at the spec's task.labels
    objective.check(dataset)
    if len(dataset.val) == 0:
        raise DataError("expected a validation split (it picks the best checkpoint), received none",
                        where=f"data {dataset.name}", hint="set [data] val_fraction > 0")
    return dataset


def preprocess_of(dataset: Dataset, input_name: str, seed: int = 0, on_error: str = "stop") -> dict[str, dict]:
    """{input: {mean, std}} from the training split (a lazy one's from a sample drawn with `seed`, unreadable
    examples left out with a note when [data] on_error is "skip"): the ONNX `archc.preprocess` metadata."""
    skipped: list[str] | None = [] if on_error == "skip" else None
    stats = normalization(dataset.train, seed=seed, skipped=skipped)
    if skipped:
        say(f"{dataset.name}: normalization statistics leave out {len(skipped)} unreadable example(s) ([data] "
            f"on_error = \"skip\"): " + "; ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else ""))
    return {input_name: {"mean": stats["mean"], "std": stats["std"]}}


def apply_preprocess(x: np.ndarray, stats: dict) -> np.ndarray:
    """`(x - mean) / std` with list statistics over axis 1: the same float32 arithmetic as `archc infer`."""
    out = []
    for key in ("mean", "std"):
        v = np.asarray(stats[key], dtype=x.dtype)
        out.append(v.reshape((v.size,) + (1,) * (x.ndim - 2)) if v.size > 1 else v.reshape(()))
    mean, std = out
    return ((x - mean) / std).astype(x.dtype, copy=False)


def normalized(dataset: Dataset, stats: dict) -> Dataset:
    """The dataset with every split's features preprocessed."""
    def one(s: Split) -> Split:
        return Split(apply_preprocess(s.x, stats), s.y)
    return Dataset(dataset.name, one(dataset.train), one(dataset.val), one(dataset.test), dataset.classes,
                   dataset.example_shape, dataset.task)


@dataclass
class Data:
    """The run's splits as the loop reads them, and the normalization they got (the ONNX's preprocess)."""

    name: str
    splits: dict[str, Examples[Any]]
    preprocess: dict | None
    labels: list[str] | None = None  # the model's class names in output order (data's or [task] labels)
    table: "Table | None" = None     # a tabular input's fitted columns (the ONNX's archc.columns)
    target_scale: dict | None = None  # {output: {mean, std}} the targets were standardized with (Task.standardize)
    features: list[str] | None = None  # a csv: source's feature column names in input order (archc.features)
    augment: dict | None = None  # what [data.augment] does to training batches (archc.augment: training only)
    reading: str = ""  # how the examples are read when not from memory, for the header
    baselines: dict | None = None  # tabular runs: scikit-learn's and the trivial test scores (archc.train.baselines)
    held: Dataset | None = None  # the test split as read, for the run's report (held_test)

    def sizes(self) -> str:
        return " / ".join(f"{len(self.splits[k])} {k}" for k in ("train", "val", "test"))


def augmenter_of(setup: Setup, objective: Task) -> Any:
    """The spec's [data.augment] as an archc.train.augment.Augmenter (None: nothing on; kornia is imported only
    when something is)."""
    spec = setup.spec.data.augment if setup.spec.data is not None else None
    if spec is None or not spec.active():
        return None
    from archc.train.augment import Augmenter

    return Augmenter.of(spec, getattr(objective, "classes", None))


def describe_augment(spec: Any) -> dict:
    from archc.train.augment import describe

    return describe(spec)


def load_data(setup: Setup, objective: Task, device: torch.device, fitted: "Table | None" = None,
              scale: dict | None = None, world: int = 1, baselines: bool = False) -> Data:
    """The checked data, normalized when the spec asks, as the objective's splits on the device (a tabular
    input's rows encoded by its fitted columns, or by `fitted`); the objective's targets standardized unless
    [data] scale_target is false (a no-op for kinds that do not scale them), with statistics fitted on the
    training split or, resuming, the run's recorded `scale` ({}: it trained on the targets as loaded). With
    `baselines`, a tabular run's reference scores on the test split, fitted on the rows as encoded (before
    normalization)."""
    dataset = load_checked(setup, objective, fitted)
    for note in dataset.notes:  # files skipped, images converted: never silent
        say(f"{dataset.name}: {note}")
    reference = baselines_of(objective, dataset) if baselines else None
    held = held_test(dataset) if makes_report(type(objective)) else None
    d = setup.spec.data
    assert d is not None  # prepare() checked it
    preprocess = preprocess_of(dataset, setup.input_name, d.split_seed, d.on_error) if d.normalize else None
    augment = augmenter_of(setup, objective)
    lazy = is_lazy(dataset.train.x)
    if preprocess and not lazy and augment is None:  # the fast path: normalized once, up front
        dataset = normalized(dataset, preprocess[setup.input_name])
    # else on the device per batch, after the augmentation (which works in the data's own units, pixels in [0, 1])
    feed = Feed(augment, preprocess[setup.input_name] if preprocess and (lazy or augment) else None)
    # Kinds whose output holds one score per class take the (aligned) data's names; others (diffusion reads labelled
    # images and ignores the labels) keep the spec's.
    named = objective.scores and dataset.classes is not None
    labels = dataset.classes if named else setup.spec.task.labels
    if scale is not None:
        target_scale = objective.standardize(dataset.train, scale) if scale else None
    else:
        target_scale = objective.standardize(dataset.train) if d.scale_target is not False else None
    workers = d.workers if d.workers is not None else default_workers(world)
    splits = objective.splits(dataset, device, split_builders(), feed=feed, workers=workers if lazy else 0,
                              on_error=d.on_error)
    return Data(dataset.name, splits, preprocess, labels, getattr(dataset, "table", None), target_scale,
                getattr(dataset, "features", None), augment=describe_augment(d.augment) if augment else None,
                reading=f"read per batch by {workers} loader worker(s)" if lazy else "", baselines=reference,
                held=held)


def split_builders() -> SplitBuilders:
    """How this package reads the splits, handed to Task.splits (archc.tasks imports no train module)."""
    from archc.train.gnn import GraphSplit, NodeSplit
    from archc.train.loader import examples_of
    from archc.train.splits import SPLITS

    return SplitBuilders(SPLITS, examples_of, NodeSplit, GraphSplit)


def held_test(dataset: Dataset) -> Dataset:
    """The data as read (before normalization), with only its test split: the run's report scores it as `archc
    infer` reads the source (archc.runtime.evaluate.read_split) without reading the source again, and holds no
    more than the test split."""
    none = np.empty(0, dtype=np.int64)
    return dataclasses.replace(dataset, train=subset(dataset.train, none), val=subset(dataset.val, none))


def baselines_of(objective: Task, dataset: Dataset) -> dict | None:
    """archc.train.baselines' scores for a classification or regression run on feature rows (None otherwise)."""
    from archc.train.baselines import tabular

    return tabular(objective.kind, dataset.train, dataset.test, torch.get_num_threads())
