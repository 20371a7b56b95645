"""The compiler pipeline, one readable list of named passes over one compiled-model object (`Compiled`).

    PASSES        load -> check -> expand -> infer     torch-free: `archc validate`
    TORCH_PASSES  ... -> lower -> export                 appended by `archc build`, `archc.compile` (lower only)

Each pass is a function that reads the fields earlier passes filled in and fills its own. `run` stops after any
pass (`--stop-after`) and locates every error: user errors carry the file, bugs carry the pass and the node.
"""
from __future__ import annotations

import gc
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import ValidationError

from archc.compiled import BuildOptions, Compiled, spec_hash  # noqa: F401  (the pipeline's public names)
from archc.errors import ArchcError, SpecError, describe, raise_all
from archc.graph.expand import expand as expand_graph
from archc.graph.infer import infer as infer_graph
from archc.graph.located import InternalError
from archc.language.columns import check as check_columns
from archc.language.errors import from_validation, layer_label
from archc.language.load import load_file, without_schema_key
from archc.language.model import FORMAT_VERSION, Spec
from archc.language import sweep as sweep_table
from archc.ops.base import BATCH

Pass = Callable[[Compiled], None]


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


def check_spec(raw: dict[str, Any]) -> Spec:
    """Plain values, the format version, then the top-level data model and the tabular inputs' columns."""
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
        spec = Spec.model_validate(raw)
    except ValidationError as e:
        raise_all(list(from_validation(e, Spec)))
        raise  # unreachable: from_validation reports at least one error
    raise_all(check_columns(spec))  # shape or columns, and every declared column's consistency
    raise_all([SpecError(f"expected a symbolic axis named other than '{BATCH}', received '{BATCH}'",
                         where=f"inputs.{name}.shape[{i}]" if i >= 0 else f"axes.{BATCH}",
                         hint=f"'{BATCH}' is every input's implicit first axis (the examples): rename this one")
               for name, i in _batch_named(spec)])
    raise_all(_recipe_errors(spec))
    raise_all(sweep_table.check(spec))  # targets and ranges; their values once the spec compiles (infer)
    d = spec.data
    if d is not None and d.val_fraction + d.test_fraction >= 1:  # each field alone is in [0, 1): the data model's
        raise SpecError(f"expected val_fraction + test_fraction < 1, received {d.val_fraction} + {d.test_fraction}",
                        where="data", hint="leave some examples for training")
    return spec


def _recipe_errors(spec: Spec) -> list[SpecError]:
    """[train] settings that train would refuse, or that the chosen optimizer, schedule or monitor would ignore."""
    t, errors = spec.train, []
    opt = t.optimizer
    if opt.name == "sgd" and opt.nesterov and opt.momentum == 0:  # torch's SGD refuses it (train did, at its start)
        errors.append(SpecError("expected momentum > 0 with nesterov = true, received momentum 0",
                                where="train.optimizer.nesterov"))
    for key in sorted(opt.model_fields_set & ({"momentum", "nesterov"} if opt.name != "sgd" else {"betas"})):
        errors.append(SpecError(f"expected no {key} for optimizer '{opt.name}' (it has none), received "
                                f"{json.dumps(getattr(opt, key))}", where=f"train.optimizer.{key}",
                                hint="momentum and nesterov are sgd's; betas are adam's and adamw's"))
    if not isinstance(t.schedule, str):
        for key in sorted(t.schedule.model_fields_set & ({"step_size", "gamma"} if t.schedule.name != "step" else set())):
            errors.append(SpecError(f"expected no {key} for schedule '{t.schedule.name}', received "
                                    f"{json.dumps(getattr(t.schedule, key))}", where=f"train.schedule.{key}",
                                    hint="step_size and gamma are the 'step' schedule's"))
    if t.early_stopping is not None and t.monitor == "last":
        errors.append(SpecError(f"expected no early_stopping with monitor = \"last\" (it never stops early), received "
                                f"{t.early_stopping}", where="train.early_stopping",
                                hint='monitor "metric" or "loss" to stop early'))
    return errors


def _batch_named(spec: Spec) -> list[tuple[str, int]]:
    """(input, shape index) of each per-example axis named like the batch axis, and ('', -1) for an [axes] entry."""
    found = [(name, i) for name, inp in spec.inputs.items() for i, d in enumerate(inp.shape or ()) if d == BATCH]
    return found + ([("", -1)] if BATCH in spec.axes else [])


# ---- the passes ---------------------------------------------------------------------------------------------
def load(c: Compiled) -> None:
    """File (TOML/JSON) -> raw dict; a dict source is taken as it is (less an editor's "$schema")."""
    source = c.source
    c.raw = without_schema_key(source, c.file) if isinstance(source, dict) else load_file(source)  # type: ignore


def check(c: Compiled) -> None:
    """Raw dict -> the validated top-level Spec."""
    c.spec = check_spec(c.raw)  # type: ignore[arg-type]


def expand(c: Compiled) -> None:
    """Spec -> a flat graph: blocks, repeats, parameters and `from` wiring resolved."""
    c.graph = expand_graph(c.spec)  # type: ignore[arg-type]


def infer(c: Compiled) -> None:
    """Every node's type, parameters and FLOPs; then the task's and memory's whole-model checks."""
    root = Path(c.source).parent if isinstance(c.source, (str, Path)) else None  # relative data paths' folder
    infer_graph(c.graph, c.spec, root)  # type: ignore[arg-type]
    if c.spec.sweep:  # type: ignore[union-attr]  # every value `archc sweep` may try compiles too
        raise_all(sweep_table.value_errors(c.raw, c.spec, lambda raw: compile_spec(raw, name=c.file)))  # type: ignore


def lower(c: Compiled) -> None:
    """Graph -> an initialized torch.fx module (imports torch)."""
    from archc.lower import lower as lower_graph

    c.module = lower_graph(c.graph, seed=c.options.seed)  # type: ignore[arg-type]


def output_path(c: Compiled) -> Path:
    """Where the export pass writes: options.output, default <model name>.onnx (once the graph is expanded)."""
    return c.options.output or Path(f"{c.graph.name}.onnx")  # type: ignore[union-attr]


def export(c: Compiled) -> None:
    """Module -> a parity-checked ONNX file at options.output (default <model name>.onnx) (imports torch)."""
    from archc.export import export as export_onnx
    from archc.export.kvcache import add_cache

    c.report = export_onnx(c, output_path(c), exporter=c.options.exporter, extra_metadata=c.options.metadata or None,
                           optimize=c.options.optimize)
    add_cache(c.report, c, c.module, c.options.optimize)  # language models: model.kv.onnx beside it


PASSES: list[tuple[str, Pass]] = [("load", load), ("check", check), ("expand", expand), ("infer", infer)]
TORCH_PASSES: list[tuple[str, Pass]] = [("lower", lower), ("export", export)]
BUILD_PASSES = PASSES + TORCH_PASSES


def names(passes: list[tuple[str, Pass]]) -> list[str]:
    return [name for name, _ in passes]


def run(c: Compiled, passes: list[tuple[str, Pass]], stop_after: str | None = None) -> Compiled:
    """Run `passes` in order on `c`, up to and including `stop_after`, skipping those `c` has been through.

    User errors (ArchcError) carry the file; anything else is a bug in archc, reported with the file and the pass
    (and, from a per-node failure, the node's spec location and op)."""
    if stop_after is not None and stop_after not in names(passes):
        raise ValueError(f"stop_after must be one of {tuple(names(passes))}")
    for name, fn in passes:
        if name in c.passes:  # ran already: a run continues where an earlier one stopped
            if name == stop_after:
                break
            continue
        try:
            with gc_paused():
                fn(c)
        except ArchcError as e:
            raise e.located(c.file) from None
        except InternalError as e:
            raise e.located(c.file, name)
        except Exception as e:  # a bug outside any one node: still say which pass and which file
            raise InternalError(e, pass_name=name).located(c.file) from e
        c.passes.append(name)
        if name == stop_after:
            break
    return c


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a pass runs.

    Its full collections walk every live object, so a pass that builds 100,000 nodes (and their torch modules) paid
    it superlinearly: validate took 4.8-9.8 s at 100,000 nodes with it and 2.7-3.0 s without, lower 2.9 s at 10,000
    against 1.8 s. Passes make little cyclic garbage; what they leave is collected once the pass is over."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compiled_from(source: str | Path | dict[str, Any], name: str = "",
                  options: BuildOptions | None = None) -> Compiled:
    """An empty compiled-model object for `source` (a path or a dict), before any pass ran."""
    file = name or (str(source) if not isinstance(source, dict) else "<spec>")
    return Compiled(file, source=source, options=options or BuildOptions())


def compile_spec(source: str | Path | dict[str, Any], stop_after: str = "infer", name: str = "") -> Compiled:
    """Run the torch-free passes up to and including `stop_after`; errors carry the file name."""
    return run(compiled_from(source, name), PASSES, stop_after)
