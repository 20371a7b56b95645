"""The one object the export passes (archc.export.passes) read and fill: the compiled model, the module to export,
the run's data facts (archc.metadata.Facts) and the export's choices, then what each pass produced."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from archc.compiled import Compiled
from archc.metadata import Facts


class Phases(dict):
    """Seconds spent per export phase (ExportReport.phases; benchmarks/bench_export_zoo.py prints them)."""

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


@dataclass
class ExportContext:
    """What an export starts from (the first block) and what its passes fill in (the second)."""

    compiled: Compiled
    path: Path
    module: Any                           # the lowered (or trained) torch module; restore replaces it
    facts: Facts = field(default_factory=Facts)
    exporter: str = "emit"                # archc.export.onnx.EXPORTERS
    optimize: bool | str = False          # archc.export.optimize: True within its budget, "always", False
    pixels: bool = False                  # the file takes uint8 pixels (archc.export.pixels)
    kv_cache: bool = False                # a language model's model.kv.onnx beside the file (archc.export.kvcache)
    check: bool = False                   # the pre-training check: the final export on trained-like weights
    carried: list[tuple[Path, Path]] = field(default_factory=list)  # (file, copy) written beside the model

    phases: Phases = field(default_factory=Phases)
    start: float = field(default_factory=time.perf_counter)
    tmp: str = ""                         # the file's temporary name beside `path`
    tmpdir: str | None = None             # the folder of file and side file, for weights past 2 GB
    model: Any = None                     # onnx.ModelProto as exported (the split's skeleton), until serialized
    split: Any = None                     # archc.export.stream.Split: the skeleton and the weights as arrays
    weight_bytes: int = 0                 # the weights' bytes (what decides external data and the optimizer)
    shared: Any = None                    # the arrays ONNX Runtime's checks take as initializers (no copy)
    weights_at: Any = None                # archc.export.stream.Placed: the weights in the written file, for the KV file
    blob: str | bytes = b""               # the serialized model, or the path of the checks' skeleton
    core: Any = None                      # the checked model a front wraps (row front, pixels)
    large: bool = False                   # weights go to external data
    decision: Any = None                  # archc.export.optimize.Decision
    table: Any = None                     # the fitted Table: the file takes a row
    seconds: float = 0.0                  # trace to checker
    checked: tuple[float, float, list] = (0.0, 0.0, [])  # parity: worst, tolerance, checks
    rewrite: bool = False                 # the file's bytes changed after the checked blob's write began
    row: dict[str, Any] | None = None
    px: dict[str, Any] | None = None
    size: int = 0
    report: Any = None                    # archc.export.onnx.ExportReport, once written

    @property
    def graph(self) -> Any:
        return self.compiled.graph

    @property
    def spec(self) -> Any:
        return self.compiled.spec

    @property
    def optimizing(self) -> bool:
        """Whether the optimizer runs: asked for; in the pre-training check only in front of a row front, which
        wraps the graph it chose (cheap for a tabular model; elsewhere a failed candidate keeps the plain graph,
        which cannot end a run)."""
        return bool(self.optimize) and not (self.check and self.facts.columns is None)
