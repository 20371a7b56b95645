"""Export as a list of passes over one compiled model (issue 23, item 1).

What the four export call sites did before this module (2026-12, as mapped):

- `archc build` (archc/pipeline.py `export`): `export(c, path, exporter, extra_metadata=options.metadata,
  optimize=options.optimize)` then `add_cache(report, c, module, optimize)`; the only extra metadata is
  `{"weights": ...}` from `--weights`. cli.py `_print_export` prints the report.
- the end of training (archc/train/loop.py `export_model`): the same two calls on the trained module moved to the
  CPU, with `training_metadata` (= `training_summary` | `data_metadata`: labels, source, preprocess, target_scale,
  features, `columns` = the fitted Table *serialized to JSON*, augment, the task's own: tokenizer or diffusion);
  `export()` reads `columns` back with `Table.from_json` (export.tabular.fitted_table) in the same process and
  `target_scale` through export.restore. `conclude` prints its own copy of the report (kv cache, optimize, row).
- `archc export RUN_DIR` (archc/train/api.py `export_run`): compiles spec.json, loads a checkpoint, reads the data
  facts back from the run's export.json (`_data_metadata`, checked by `_checked_export`), rebases `source`, then
  the same two calls (no `add_cache` with `--pixels`); cli.py `_print_export` prints the report (the second copy).
- the pre-training check (archc/train/export_check.py `check_export`): `export()` only, on trained-like weights,
  into a temporary folder, with `data_metadata`, `optimize` only for a tabular model (`"columns" in extra`), no KV
  cache: a different path which said it ran "the same export".

The magic keys steering them: an `extra_metadata` dict whose `target_scale` adds the restoring affine, whose
`columns` adds the row front, whose `labels` replaces archc.task's labels, every other entry becoming `archc.<key>`;
an `optimize` flag threaded through cli, pipeline, compiled, train.recipe/api/loop/export_check/command,
export.onnx and export.kvcache; readers spelling the `archc.*` keys as string literals (runtime.session, .io,
.generate, .sample, .tabular, .pixels, .kvcache, export.quantize, .genai, .tabular, .pixels, tasks.base).

Now: `export()` below builds one ExportContext (archc.export.context: the compiled model, the module, the run's
data facts as typed fields, archc.metadata.Facts, and the export's choices) and runs EXPORT_PASSES, each pass with
the condition under which it runs; all four sites call it (the pre-training check with `check=True`, the same list);
`report_lines` is the one report of what the passes made (cli and training log). Keys are named in archc.metadata.
The exporter is chosen in one place, the `emit` pass (archc.export.onnx.emit, `_model_proto`; the accepted names
in archc.export.onnx.EXPORTERS): archc's emitter (archc.emit) by default, torch.onnx's TorchScript trace as the
fallback (`--exporter torchscript`). Every pass after it is the same for both. A new variant of the file is one
module (its pass function and report line) and one entry in EXPORT_PASSES (tests/export/test_passes.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from archc.compiled import Compiled
from archc.export import onnx as export_onnx
from archc.export.context import ExportContext
from archc.metadata import Facts

Stage = str  # "module": on the torch module; "file": inside the file's scope (threads, temporary names); "after"


@dataclass(frozen=True)
class ExportPass:
    """One named step of the export: `run` when `when(ctx)` holds. `stage` "file" passes run together inside
    archc.export.onnx.in_file (the export's threads, temporary names removed on failure); `describe` gives the
    report's line about what the pass made ('' for none)."""

    name: str
    run: Callable[[ExportContext], None]
    when: Callable[[ExportContext], bool] = lambda ctx: True
    stage: Stage = "file"
    describe: Callable[[Any], str] | None = None


def _carry(ctx: ExportContext) -> None:
    """The files the metadata names (a run's tokenizer.json), copied beside the model once it is in place, before
    the KV cache's GenAI package, which uses them."""
    from archc.util import write_bytes_atomic

    for src, dst in ctx.carried:
        write_bytes_atomic(dst, src.read_bytes())


def _kv_cache(ctx: ExportContext) -> None:
    from archc.export.kvcache import add_cache

    add_cache(ctx.report, ctx.compiled, ctx.module, ctx.optimize, ctx.facts, ctx.weights_at)  # language models: model.kv.onnx


def _pinned_lines(report: Any) -> str:
    """The axes parity checked at one size only, the one their bounds allow."""
    sizes = report.checks[0]["sizes"] if report.checks else {}
    return "\n".join(f"note: axis '{axis}' checked at {sizes.get(axis, '?')} only, the one size its bounds allow "
                     f"({why})" for axis, why in report.pinned.items())


def _row_line(report: Any) -> str:
    from archc.export.tabular import describe

    return describe(getattr(report, "row", None))


def _pixels_line(report: Any) -> str:
    from archc.export.pixels import describe

    return describe(getattr(report, "pixels", None))


def _kv_lines(report: Any) -> str:
    from archc.export.kvcache import describe, describe_package

    kv = getattr(report, "kvcache", None)
    return "\n".join(line for line in (describe(kv), describe_package(kv)) if line)


def _optimize_lines(report: Any) -> str:
    from archc.export.optimize import lines

    return "\n".join(lines(report))


# The export, top to bottom. A new variant of the exported file is one module (its pass function, and a line for
# the report) and one entry here; the exporter choice (emit, the default; torchscript; dynamo) is the one call in
# `emit`. The KV-cache graph is emitted by the same ops' emitters (archc.export.kvcache), whichever wrote model.onnx.
EXPORT_PASSES: list[ExportPass] = [
    ExportPass("restore", export_onnx.restore, lambda ctx: bool(ctx.facts.target_scale), stage="module"),
    ExportPass("check arguments", export_onnx.check_arguments, stage="module"),
    ExportPass("emit", export_onnx.emit),
    ExportPass("budget", export_onnx.budget, lambda ctx: ctx.optimizing),
    ExportPass("serialize", export_onnx.serialize),
    ExportPass("check", export_onnx.check, describe=_pinned_lines),
    ExportPass("optimize", export_onnx.optimize,
               lambda ctx: ctx.optimizing and not ctx.large and ctx.decision is None),
    ExportPass("row front", export_onnx.row_front, lambda ctx: ctx.table is not None, describe=_row_line),
    ExportPass("pixels", export_onnx.pixels, lambda ctx: ctx.pixels, describe=_pixels_line),
    ExportPass("write", export_onnx.write),
    ExportPass("carry", _carry, lambda ctx: bool(ctx.carried), stage="after"),
    ExportPass("kv cache", _kv_cache, lambda ctx: ctx.kv_cache and not ctx.check, stage="after",
               describe=_kv_lines),
]


def run_export(ctx: ExportContext, passes: list[ExportPass] | None = None) -> Any:
    """Run the export passes on `ctx` in order (each where its condition holds); the ExportReport."""
    from archc.threads import for_export, torch_threads

    todo = list(EXPORT_PASSES if passes is None else passes)
    while todo:
        stage = todo[0].stage
        group = []
        while todo and todo[0].stage == stage:
            group.append(todo.pop(0))
        if stage == "file":
            with torch_threads(for_export()):  # the user's --threads, else fewer on a busy machine
                export_onnx._export(ctx, lambda group=group: _run(ctx, group))
        else:
            _run(ctx, group)
    return ctx.report


def _run(ctx: ExportContext, group: list[ExportPass]) -> None:
    for p in group:
        if p.when(ctx):
            p.run(ctx)


def export(compiled: Compiled, path: str | Path, module: Any = None, exporter: str = "emit",
           extra_metadata: Facts | dict[str, Any] | None = None, optimize: bool | str = False,
           pixels: bool = False, kv_cache: bool = False, check: bool = False,
           carried: list[tuple[Path, Path]] | None = None) -> Any:
    """Export the compiled model's module (or `module`: the same graph lowered, e.g. trained) through
    EXPORT_PASSES: the ONNX file at `path`, checked with onnx.checker and against torch under ONNX Runtime, with
    archc's metadata; the ExportReport. What `archc build`, the end of training, `archc export` and the
    pre-training check all call.

    `extra_metadata`: the run's data facts (archc.metadata.Facts, or export.json's form): `target_scale` ends the
    graph with the affine restoring the targets' units (archc.export.restore), `columns` puts the fitted table's row
    front before it (archc.export.tabular). `optimize`: then simplify the checked graph (archc.export.optimize)
    within its budget ("always": past it), kept where it has fewer compute nodes (metadata archc.optimized,
    ExportReport.optimized). `pixels`: the file takes uint8 [batch, H, W, C] images (archc.export.pixels).
    `kv_cache`: a language model's KV-cache file beside it (ExportReport.kvcache). `check`: the pre-training
    check (trained-like weights, a temporary folder): the optimizer only in front of a row front, no KV cache.
    `carried`: (file, copy) pairs written once the file is in place (archc.outputs.carried, checked before).

    Weights over EXTERNAL_DATA_BYTES go to `<name>.data` beside the file (protobuf cannot hold 2 GB). Both are
    written in a temporary folder beside `path`, checked there, then renamed: the data first, so a model file
    never names a missing one. A failed export leaves nothing."""
    module = module if module is not None else compiled.module
    assert compiled.graph is not None and compiled.spec is not None and module is not None, \
        "export runs after infer and lower"
    facts = extra_metadata if isinstance(extra_metadata, Facts) else Facts.from_record(extra_metadata)
    ctx = ExportContext(compiled, Path(path), module, facts, exporter, optimize, pixels, kv_cache, check,
                        list(carried or []))
    return run_export(ctx)


def report_lines(report: Any) -> list[str]:
    """What the export made besides the file, one line each, for the CLI and the training log: the axes checked
    at one size, the row front, the pixels front, the KV cache and its GenAI package, the optimizer's decisions."""
    # each pass's lines, then the optimizer's decisions, which cover the model and its KV-cache file
    describers = [p.describe for p in EXPORT_PASSES if p.describe is not None] + [_optimize_lines]
    return [line for describe in describers for line in (describe(report) or "").splitlines() if line]
