"""The compiled-model object every pass of archc/pipeline.py reads and fills in (no torch)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archc.graph.ir import Graph
from archc.language.model import Spec
from archc.metadata import Facts


@dataclass
class BuildOptions:
    """What the lower and export passes need besides the spec (`archc build`'s and train's options)."""

    seed: int | None = 0                  # parameter initialization (None: torch's current RNG state)
    output: Path | None = None            # the ONNX file (default: <model name>.onnx)
    exporter: str = "emit"                # archc.export.onnx.EXPORTERS (emit: each op's emitter; torchscript)
    metadata: dict[str, Any] = field(default_factory=dict)  # data facts in export.json's form (Facts.from_record)
    optimize: bool | str = True           # simplify the exported graphs (archc.export.optimize; "always": past its budget)


@dataclass
class Compiled:
    """What the pipeline produced so far; each pass fills its field (later ones stay None when stopped early).

    load -> raw, check -> spec, expand -> graph, infer -> the graph's types, lower -> module, export -> report.
    `facts` are filled by the caller (`archc build --weights`, training) before export.
    """

    file: str
    raw: dict[str, Any] | None = None
    spec: Spec | None = None
    graph: Graph | None = None
    passes: list[str] = field(default_factory=list)
    module: Any = None                    # torch.fx.GraphModule after `lower`
    report: Any = None                    # archc.export.onnx.ExportReport after `export`
    options: BuildOptions = field(default_factory=BuildOptions)
    facts: Facts = field(default_factory=Facts)  # the run's data facts the export writes (archc.metadata)
    source: str | Path | dict[str, Any] | None = field(default=None, repr=False)  # what `load` reads

    @property
    def sha256(self) -> str:
        return spec_hash(self.raw or {})


def spec_hash(raw: dict[str, Any]) -> str:
    """Hash of the spec's data (TOML and JSON forms of one spec hash alike). Keys are sorted, so the order of a
    tabular input's columns, which is the order of the encoded row, is hashed besides (only where there is one:
    other specs keep the hash they had)."""
    orders = _column_orders(raw)
    data = {**raw, "$column_order": orders} if orders else raw
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _column_orders(raw: dict[str, Any]) -> dict[str, list[str]]:
    """{input: [column names in declaration order]} of the raw spec's tabular inputs."""
    inputs = raw.get("inputs")
    if not isinstance(inputs, dict):
        return {}
    return {str(name): list(inp["columns"]) for name, inp in inputs.items()
            if isinstance(inp, dict) and isinstance(inp.get("columns"), dict)}
