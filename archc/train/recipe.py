"""The recipe of a run: the spec with command-line overrides applied, its data source and run folder (no torch)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from archc.errors import DataError, SpecError
from archc.graph.infer import check_single_input
from archc.graph.memory import check_fits
from archc.graph.ir import Graph
from archc.pipeline import Compiled, compile_spec
from archc.language.model import Spec
from archc.tasks import REGISTRY
from archc.train.run_dir import RunDir

# Task kinds whose objective builds the model's inputs itself (a noised image and its timestep, or whole graphs
# without a batch axis); the others train a single batched input.


@dataclass
class Overrides:
    """Command-line flags that replace values of the spec's [train] and [data] (None: keep the spec's)."""

    data: str | None = None
    target: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    strategy: str | None = None


@dataclass
class Setup:
    """Everything a run is made of, decided before any torch code runs."""

    file: str
    raw: dict[str, Any]          # the spec as used (overrides applied): written to spec.json, stored in the ONNX
    compiled: Compiled
    run_dir: RunDir
    data_root: Path | None       # folder that relative data paths of the spec are read from
    init: Any = None             # archc.weights.Init: the checkpoint `--init` starts from (None: the seed's init)
    optimize: bool = True        # the final export's graph simplification (archc.export.optimize; --no-optimize)
    exporter: str = "emit"       # what writes the exports' graph (archc.export.onnx.EXPORTERS; --exporter)
    threads: int | None = None   # --threads: torch threads per process (None: [train] threads, else archc.threads)
    track: tuple[str, ...] = ()  # the trackers rank 0 logs to (archc.train.tracking: --no-tensorboard, --mlflow, ...)
    # called with each epoch's row and the task's metric name once the epoch is recorded and checkpointed (rank 0):
    # `archc sweep` reports it to its pruner, which may stop the run by raising
    on_epoch: Callable[[dict[str, Any], str], None] | None = None

    @property
    def spec(self) -> Spec:
        return self.compiled.spec  # type: ignore[return-value]

    @property
    def graph(self) -> Graph:
        return self.compiled.graph  # type: ignore[return-value]

    @property
    def sha256(self) -> str:
        return self.compiled.sha256

    @property
    def input_name(self) -> str:
        return next(iter(self.graph.inputs))


def apply_overrides(raw: dict[str, Any], o: Overrides) -> dict[str, Any]:
    """A copy of `raw` with the flags written into [train] and [data]: the spec as used."""
    used = copy.deepcopy(raw)
    train = used.setdefault("train", {})
    for key, value in (("epochs", o.epochs), ("batch_size", o.batch_size), ("seed", o.seed),
                       ("strategy", o.strategy)):
        if value is not None:
            train[key] = value
    if o.lr is not None:
        optimizer = train.setdefault("optimizer", {})
        if not isinstance(optimizer, dict):
            raise SpecError("expected a table { name = ..., lr = ... }", where="train.optimizer")
        optimizer["lr"] = float(o.lr)
    for key, value in (("source", o.data), ("target", o.target)):
        if value is not None:
            data = used.setdefault("data", {})
            if not isinstance(data, dict):
                raise SpecError("expected a table [data]", where="data")
            data[key] = value
    return used


def data_root(source: str, spec_dir: Path) -> Path | None:
    """A spec's relative data path is read next to the spec when it exists there, else from the working folder."""
    from archc.data.sources import path_of  # here: archc.data imports numpy, which `archc validate` never needs

    path = path_of(source, spec_dir)
    if path and not Path(path).is_absolute() and (spec_dir / path).exists():
        return spec_dir
    return None


def prepare(spec: str | Path | dict[str, Any], o: Overrides, out: str | Path | None,
            root_given: str | Path | None = None) -> Setup:
    """Compile the spec as used, check it can be trained, and decide the run folder and the data root
    (`root_given`: the one a --nproc launcher decided, for workers that read the run folder's spec.json)."""
    file = str(spec) if not isinstance(spec, dict) else "<spec>"
    base = compile_spec(spec, stop_after="load") if not isinstance(spec, dict) else None
    raw = apply_overrides(base.raw if base is not None else spec, o)  # type: ignore[arg-type]
    compiled = compile_spec(raw, name=file)
    graph = compiled.graph
    assert compiled.spec is not None and graph is not None
    check_fits(graph, file=file)  # before the data is read or a weight allocated (training: train.api)
    if not REGISTRY[compiled.spec.task.kind].own_inputs:
        check_single_input(graph, file)
    if compiled.spec.data is None:
        raise DataError("no training data: expected a [data] source in the spec or --data SOURCE",
                        where="data", hint="e.g. --data sklearn:digits", file=file)
    spec_dir = Path(file).parent if not isinstance(spec, dict) else Path.cwd()
    root = data_root(compiled.spec.data.source, spec_dir) if o.data is None else None
    if root_given is not None:
        root = Path(root_given)
    run_dir = RunDir(Path(out) if out is not None else Path("runs") / compiled.spec.model.name)
    return Setup(file, raw, compiled, run_dir, root)
