"""The compiler pipeline, one readable list of named passes over one compiled-model object (`Compiled`).

    PASSES        load -> check -> expand -> infer     torch-free: `archc validate`
    TORCH_PASSES  ... -> lower -> export                 appended by `archc build`, `archc.compile` (lower only)

Each pass is a function that reads the fields earlier passes filled in and fills its own. `run` stops after any
pass (`--stop-after`) and locates every error: user errors carry the file, bugs carry the pass and the node.
"""
from __future__ import annotations

import gc
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import ValidationError

from archc.compiled import BuildOptions, Compiled, spec_hash  # noqa: F401  (the pipeline's public names)
from archc.errors import ArchcError, SpecError, describe, raise_all
from archc.graph.expand import expand as expand_graph, own_errors
from archc.graph.infer import infer as infer_graph
from archc.graph.located import InternalError
from archc.language.columns import check as check_columns
from archc.language.errors import from_validation, layer_label
from archc.language.exprs import substitute
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


# the sections the expand pass reads: while they are sound, the graph is expanded beside other sections' errors
EXPAND_SECTIONS = ("inputs", "blocks", "params", "layers", "outputs", "axes")
STAND_INS = {"model": {"name": "model"}, "layers": [{}]}  # broken required sections: stand-ins for the other checks


def check_spec(raw: dict[str, Any]) -> Spec:
    """Plain values, the format version, then the top-level data model and the tabular inputs' columns."""
    spec, errors = checked_spec(raw)
    raise_all(errors)
    return spec  # type: ignore[return-value]


def checked_spec(raw: dict[str, Any]) -> tuple[Spec | None, list[ArchcError]]:
    """The Spec and every independent error of the check pass. The checks after the data model (columns, recipe)
    run on a stand-in whose broken parts took their defaults, so they report no knock-ons. With errors, the Spec
    returned is that stand-in when none of the sections the expand pass reads is broken (expanding it finds the
    layers' own errors), else None."""
    check_values(raw)  # garbage (too deep, too large): nothing past it can be judged
    errors = _version_errors(raw)
    if errors and raw.get("archc") is not None:  # another format: its other errors would be knock-ons
        raise_all(errors)
    expandable, broken = True, set()
    try:
        spec = Spec.model_validate({**raw, "archc": FORMAT_VERSION})
    except ValidationError as e:
        errors += from_validation(e, Spec)
        broken = {_part(err["loc"]) for err in e.errors()}
        expandable = not {place[0] for place in broken} & set(EXPAND_SECTIONS)
        try:
            spec = Spec.model_validate(_stand_in(raw, broken))
        except ValidationError:  # a stand-in that does not validate: only the sections' own errors are reported
            return None, errors
    later = check_columns(spec)  # shape or columns, and every declared column's consistency
    later += [SpecError(f"expected a symbolic axis named other than '{BATCH}', received '{BATCH}'",
                        where=f"inputs.{name}.shape[{i}]" if i >= 0 else f"axes.{BATCH}",
                        hint=f"'{BATCH}' is every input's implicit first axis (the examples): rename this one")
              for name, i in _batch_named(spec)]
    later += _recipe_errors(spec)
    # [sweep]'s targets (not in a broken [params] or [train]: a knock-on) and ranges; the values once it compiles
    later += sweep_table.check(spec, skip={place[0] for place in broken})
    d = spec.data
    if d is not None and d.val_fraction + d.test_fraction >= 1:  # each field alone is in [0, 1): the data model's
        later.append(SpecError(f"expected val_fraction + test_fraction < 1, received {d.val_fraction} + "
                               f"{d.test_fraction}", where="data", hint="leave some examples for training"))
    errors += later
    expandable = expandable and not any(section(e.where) in EXPAND_SECTIONS for e in later)
    return (spec if expandable else None), errors


def _part(loc: tuple) -> tuple:
    """The part of the spec a data-model error breaks: its section, one input, or one declared column."""
    if loc[:1] != ("inputs",):
        return loc[:1]
    return loc[:4] if len(loc) >= 4 and loc[2] == "columns" else loc[:2]


def _stand_in(raw: dict[str, Any], broken: set[tuple]) -> dict[str, Any]:
    """`raw` with its broken parts taken out (a section, an input or a declared column), for the checks that do not
    read them: a section left out takes its default, or a stand-in when it is required."""
    out = {k: v for k, v in raw.items() if (k,) not in broken}
    inputs = out.get("inputs")
    if isinstance(inputs, dict):
        out["inputs"] = {k: v for k, v in inputs.items() if ("inputs", k) not in broken}
        for name, inp in out["inputs"].items():
            cols = inp.get("columns") if isinstance(inp, dict) else None
            if isinstance(cols, dict) and any(p[:3] == ("inputs", name, "columns") for p in broken):
                out["inputs"][name] = {**inp, "columns": {k: v for k, v in cols.items()
                                                          if ("inputs", name, "columns", k) not in broken}}
    return {**out, **{k: v for k, v in STAND_INS.items() if (k,) in broken}, "archc": FORMAT_VERSION}


def _version_errors(raw: dict[str, Any]) -> list[ArchcError]:
    """The format version: missing (the rest is checked as the current format), or not one this archc reads."""
    version = raw.get("archc")
    if version is None:
        return [SpecError("missing format version", where="archc",
                          hint=f"add `archc = {FORMAT_VERSION}` as the first line")]
    if isinstance(version, bool) or not isinstance(version, int):
        return [SpecError(f"expected the format version as an integer ({FORMAT_VERSION}), received {version!r}",
                          where="archc")]
    if version > FORMAT_VERSION:
        return [SpecError(f"expected format version {FORMAT_VERSION} or older, received {version}",
                          where="archc", hint="this spec needs a newer archc; upgrade it")]
    if version < 1:
        return [SpecError(f"expected format version {FORMAT_VERSION}, received {version}", where="archc")]
    return []


def section(where: str) -> str:
    """The top-level section an error's location is in: 'layers' of 'layers[2] (fc2).units'."""
    return re.match(r"[^.\[ ]*", where).group()  # type: ignore[union-attr]


def in_file_order(errors: list[ArchcError], raw: dict[str, Any]) -> list[ArchcError]:
    """`errors` without repeats, in the order of the spec's text (a stable sort: errors at one place keep their
    pass's order); an error at a place the spec does not have (a missing section) first."""
    unique = list({e.line(): e for e in reversed(errors)}.values())[::-1]  # the first of equal lines kept
    return sorted(unique, key=lambda e: position(e.where, raw))


def position(where: str, raw: dict[str, Any]) -> tuple[int, ...]:
    """Where a location lies in the spec's text, as indices down its tables and lists ('layers[2] (fc2).units' ->
    (index of layers, 2, index of units)); a part the spec does not have sorts after its siblings, a section before
    every other; a location inside a block instance sorts at the layer that uses it."""
    outer = where.split(" in ")[-1]  # 'blocks.res.layers[1] in layers[2] (stage) repeat 1': the use, layers[2]
    head = re.sub(r" \([^()]*\)| repeat \d+", "", outer)  # the layer labels: 'layers[2] (fc2)'
    out: list[int] = []
    value: Any = raw
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", head):
        if isinstance(value, dict) and key in value:
            out.append(list(value).index(key))
            value = value[key]
        elif isinstance(value, list) and index and int(index) < len(value):
            out.append(int(index))
            value = value[int(index)]
        else:
            out.append(len(value) if out and isinstance(value, (dict, list)) else -1)
            break
    return tuple(out)


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
    """Raw dict -> the validated top-level Spec. A spec with errors is reported whole, in one round: the layers'
    own errors (unknown op, unknown or mistyped attribute) come beside the other sections', found by expanding the
    graph when the sections it reads are sound, else layer by layer; a check that hangs on a broken part is skipped
    (its error would be a knock-on)."""
    raw: dict[str, Any] = c.raw  # type: ignore[assignment]
    spec, errors = checked_spec(raw)
    if not errors:
        c.spec = spec
        return
    raise_all(in_file_order(errors + _layer_errors(raw, spec, errors), raw))


def _layer_errors(raw: dict[str, Any], spec: Spec | None, errors: list[ArchcError]) -> list[ArchcError]:
    """The layers' errors beside the check pass's `errors`: the expand pass's on a stand-in spec, or each
    top-level layer's own while the layer list itself is sound."""
    if spec is not None:
        try:
            expand_graph(spec)
        except ArchcError as e:
            return e.problems()
        return []
    layers = raw.get("layers")
    if not isinstance(layers, list) or any(e.where == "layers" for e in errors):
        return []
    return own_errors(layers, _params(raw, errors))


def _params(raw: dict[str, Any], errors: list[ArchcError]) -> dict[str, Any] | None:
    """The spec's [params] evaluated in order, for the layers' references; None when they are broken."""
    params: dict[str, Any] = {}
    table = raw.get("params", {})
    if not isinstance(table, dict) or any(section(e.where) == "params" for e in errors):
        return None
    try:
        for key, value in table.items():
            params[key] = substitute(value, params)
    except SpecError:
        return None
    return params


def expand(c: Compiled) -> None:
    """Spec -> a flat graph: blocks, repeats, parameters and `from` wiring resolved."""
    c.graph = expand_graph(c.spec)  # type: ignore[arg-type]


def infer(c: Compiled) -> None:
    """Every node's type, parameters and FLOPs; then the task's and memory's whole-model checks."""
    # relative data paths' folder: the spec file's, also for the dict `archc train` compiles from it (its name)
    named = c.source if isinstance(c.source, (str, Path)) else c.file if c.file and Path(c.file).is_file() else None
    root = Path(named).parent if named is not None else None
    infer_graph(c.graph, c.spec, root)  # type: ignore[arg-type]
    if c.spec.sweep:  # type: ignore[union-attr]  # every value `archc sweep` may try compiles too
        raise_all(sweep_table.value_errors(c.raw, c.spec, lambda raw: compile_spec(raw, name=c.file)))  # type: ignore


def lower(c: Compiled) -> None:
    """Graph -> an initialized torch.fx module (imports torch); refused first when the build would run out of memory."""
    from archc.graph.memory import check_fits
    from archc.lower import lower as lower_graph

    check_fits(c.graph)  # type: ignore[arg-type]

    c.module = lower_graph(c.graph, seed=c.options.seed)  # type: ignore[arg-type]


def output_path(c: Compiled) -> Path:
    """Where the export pass writes: options.output, default <model name>.onnx (once the graph is expanded)."""
    return c.options.output or Path(f"{c.graph.name}.onnx")  # type: ignore[union-attr]


def export(c: Compiled) -> None:
    """Module -> a parity-checked ONNX file at options.output (default <model name>.onnx), and a language model's
    KV-cache file beside it: archc.export.passes.EXPORT_PASSES (imports torch)."""
    from archc.export import export as export_onnx
    from archc.metadata import Facts

    facts = c.facts.merged(Facts.from_record(c.options.metadata)) if c.options.metadata else c.facts
    c.report = export_onnx(c, output_path(c), exporter=c.options.exporter, extra_metadata=facts,
                           optimize=c.options.optimize, kv_cache=True)


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
