"""The compiler pipeline, one readable list of named passes: load -> check -> expand -> infer."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archc.errors import ArchcError, SpecError, describe, raise_all
from archc.graph.expand import expand
from archc.graph.infer import infer
from archc.graph.ir import Graph
from archc.language.errors import from_validation, layer_label
from archc.language.load import load_file
from archc.language.model import FORMAT_VERSION, Spec

PASSES = ("load", "check", "expand", "infer")


@dataclass
class Compiled:
    """What the pipeline produced so far (later fields are None when stopped early)."""

    file: str
    raw: dict[str, Any]
    spec: Spec | None = None
    graph: Graph | None = None
    passes: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return spec_hash(self.raw)


def spec_hash(raw: dict[str, Any]) -> str:
    """Hash of the spec's data (TOML and JSON forms of one spec hash alike)."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


MAX_DEPTH = 32            # tables and lists nested deeper than this are garbage, not a spec
INT64 = 2**63 - 1         # torch and ONNX sizes are int64: anything larger is a typo, caught before arithmetic


def check_values(raw: dict[str, Any]) -> None:
    """Every value is plain data of sane depth, with integers that fit int64 (iterative: no RecursionError)."""
    errors: list[ArchcError] = []
    todo: list[tuple[Any, str, int]] = [(raw, "", 0)]  # a stack, children pushed reversed: document order
    while todo:
        value, where, depth = todo.pop()
        if depth > MAX_DEPTH:
            errors.append(SpecError(f"expected tables and lists nested at most {MAX_DEPTH} deep, received deeper",
                                    where=where))
        elif isinstance(value, dict):
            todo.extend(reversed([(v, f"{where}.{k}" if where else str(k), depth + 1) for k, v in value.items()]))
        elif isinstance(value, (list, tuple)):
            # a layer is named as everywhere else: layers[2] (fc2)
            todo.extend(reversed([(v, f"{where}[{i}]{layer_label(v)}", depth + 1) for i, v in enumerate(value)]))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64:
            errors.append(SpecError(f"expected an integer within int64 (at most 2**63 - 1), received "
                                    f"{describe(value)}", where=where))
    raise_all(errors)


def check(raw: dict[str, Any]) -> Spec:
    """Plain values, the format version, then the top-level data model."""
    check_values(raw)
    version = raw.get("archc")
    if version is None:
        raise SpecError("missing format version", where="archc",
                        hint=f"add `archc = {FORMAT_VERSION}` as the first line")
    if isinstance(version, bool) or not isinstance(version, int):
        raise SpecError(f"expected the format version as an integer ({FORMAT_VERSION}), received {version!r}",
                        where="archc")
    if version > FORMAT_VERSION:
        raise SpecError(f"expected format version {FORMAT_VERSION} or older, received {version}",
                        where="archc", hint="this spec needs a newer archc; upgrade it")
    if version < 1:
        raise SpecError(f"expected format version {FORMAT_VERSION}, received {version}", where="archc")
    try:
        return Spec.model_validate(raw)
    except ValidationError as e:
        raise_all(list(from_validation(e, Spec)))
        raise  # unreachable: from_validation reports at least one error


def compile_spec(source: str | Path | dict[str, Any], stop_after: str = "infer", name: str = "") -> Compiled:
    """Run the passes up to and including `stop_after`; errors carry the file name."""
    if stop_after not in PASSES:
        raise ValueError(f"stop_after must be one of {PASSES}")
    file = name or (str(source) if not isinstance(source, dict) else "<spec>")
    try:
        result = Compiled(file, source if isinstance(source, dict) else load_file(source), passes=["load"])
        for step in PASSES[1:]:
            if result.passes[-1] == stop_after:
                break
            if step == "check":
                result.spec = check(result.raw)
            elif step == "expand":
                result.graph = expand(result.spec)  # type: ignore[arg-type]
            elif step == "infer":
                infer(result.graph, result.spec)  # type: ignore[arg-type]
            result.passes.append(step)
        return result
    except ArchcError as e:
        raise e.located(file) from None
