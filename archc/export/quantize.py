"""`archc quantize`: int8 and fp16 variants of an exported archc model, scored against it on held-out data.

The variants themselves (int8 dynamic, int8 static, fp16: ONNX Runtime's own tooling) are archc.export.variants;
this module scores them on the split `archc infer --input SOURCE` scores, records and writes them. A variant keeps
every archc.* metadata entry of its base (task, labels, bounds, preprocessing, tokenizer: its tokenizer.json is
copied beside a variant written to another folder) and adds archc.quantization: the
method, the base file's sha256, the metric before and after on the held-out split, the sizes. Writes are atomic (a
temporary file beside the target, then rename); the input is never overwritten. torch is never imported.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from archc import strict_json
from archc.errors import ExportError, InputError, ModelError
import archc.metadata as keys
from archc.export import variants
from archc.export.variants import METHODS, NEEDS_CALIBRATION, SUFFIXES
from archc.util import publish, temp_beside, write_bytes_atomic

CALIBRATION_EXAMPLES = 512   # activation ranges settle well before this on the example specs
DEFAULT_MAX_DROP = 1.0       # percentage points (accuracy-like metrics) or percent of the base value (errors)
META_KEY = keys.QUANTIZATION


@dataclass
class Scored:
    """Metrics of one model on the held-out split, and the raw outputs they came from."""

    metrics: dict[str, float]
    outputs: dict[str, np.ndarray]


@dataclass
class Evaluation:
    """The held-out data a base model and its variants are scored on, and the calibration examples."""

    source: str | None
    description: str = ""
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    y: np.ndarray | None = None
    calibration: dict[str, np.ndarray] | None = None  # preprocessed: what the ONNX graph itself reads
    calibration_description: str = ""
    note: str = ""  # why the metric is not measured


@dataclass
class VariantReport:
    """What `archc quantize` wrote (or refused to) for one method."""

    method: str
    path: str
    bytes_before: int
    bytes_after: int
    metric: str | None
    before: dict[str, float]
    after: dict[str, float]
    worse_by: float | None        # in points (see worsening); None when not measured
    unit: str
    max_abs_diff: float | None
    seconds: float
    written: bool = True
    data: str = ""                # the held-out split scored, as `archc infer` describes it
    note: str = ""                # why the metric was not measured
    hint: str = ""                # a measured caveat of this variant (speed), for the user

    @property
    def ratio(self) -> float:
        return self.bytes_before / self.bytes_after if self.bytes_after else float("nan")


# ---- the base model ------------------------------------------------------------------------------------------

def open_base(path: Path) -> Any:
    """The archc model to quantize, opened on CPU; ModelError for a missing, corrupt, foreign or quantized file."""
    from archc.runtime import Model

    model = Model.open(path, device="cpu")
    if keys.SPEC not in model.metadata or model.task is None:
        raise ModelError("expected a model exported by archc (archc.* metadata: task, inputs, preprocessing), "
                         "received one without", file=str(path),
                         hint="`archc build` or `archc train` writes one")
    done = model.metadata.get(META_KEY)
    if done:
        method = (_json(done) or {}).get("method", "quantized")
        raise ModelError(f"expected a float32 archc model, received a variant already quantized ({method})",
                         file=str(path),
                         hint="quantize its base model instead")
    return model


def _json(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def recorded_source(model: Any) -> str | None:
    """The data source the model was trained on: `archc.source` (its path relative to the model's folder, as the
    run recorded it; an absolute one from an earlier archc as it is), made readable from the working folder; else
    the spec-as-used's [data] source (a --data override included; a relative path reads from the current folder)."""
    from archc.data.sources import rebased

    recorded = model.metadata.get(keys.SOURCE)
    if isinstance(recorded, str) and recorded:
        return rebased(recorded, Path(model.path).parent, Path.cwd())
    spec = _json(model.metadata.get(keys.SPEC, "")) or {}
    data = spec.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    return source if isinstance(source, str) and source else None


def _relative(source: Any) -> bool:
    """Whether a recorded source names a relative path (read against the model's folder)."""
    from archc.data.sources import path_of

    path = path_of(source) if isinstance(source, str) and source else None
    return path is not None and not Path(path).expanduser().is_absolute()


def evaluation(model: Any, source: str | None, given: bool, split: str, calibrate: bool) -> Evaluation:
    """The held-out `split` of `source` as `archc infer --input SOURCE --split` reads it, and (when `calibrate`)
    up to CALIBRATION_EXAMPLES preprocessed examples of its train split. A recorded source (not `given`) that
    cannot be read here leaves the metric unmeasured, with the reason; a given one is an error."""
    from archc.errors import ArchcError
    from archc.runtime.evaluate import load_split
    from archc.tasks.base import for_model

    cls = for_model(model)
    if calibrate and cls.own_inputs:  # its inputs are whole graphs or noised images, not rows to batch
        raise InputError(f"int8 static quantization calibrates on batches of examples, which a {cls.kind} model "
                         "does not read", where="--int8", hint="use --int8 dynamic")
    if source is None:
        if calibrate:
            raise InputError("int8 static quantization calibrates on the training data, but the model records no "
                             "data source", where="--data", hint="pass --data SOURCE (e.g. sklearn:digits)")
        return Evaluation(None, note="the model records no data source (pass --data SOURCE)")
    try:
        held_out = load_split(model, source, split)
    except ArchcError as e:
        if given or calibrate:
            raise
        recorded = model.metadata.get(keys.SOURCE)
        where = f" (recorded as {recorded!r}, relative to the model's folder)" if _relative(recorded) else ""
        return Evaluation(None, note=f"its recorded data source {source!r}{where} cannot be scored here: {e.line()} "
                                     "(pass --data SOURCE)")
    ev = Evaluation(source, held_out.description, held_out.feeds, held_out.y)
    if calibrate:
        ev.calibration, ev.calibration_description = calibration(model, load_split(model, source, "train"))
    return ev


def calibration(model: Any, train: Any) -> tuple[dict[str, np.ndarray], str]:
    """Up to CALIBRATION_EXAMPLES examples of the train split, preprocessed as the graph reads them."""
    n = len(train.y)
    rng = np.random.default_rng(0)  # a fixed sample: the same variant from the same model and data
    pick = np.sort(rng.permutation(n)[:CALIBRATION_EXAMPLES])
    feeds = model.check({k: v[pick] for k, v in train.feeds.items()})
    return feeds, f"{train.description.rsplit(',', 1)[0]}, {len(pick)} of {n} examples"


def score(model: Any, ev: Evaluation) -> Scored | None:
    """The model's metrics on the held-out split (what `archc infer --input SOURCE` prints); None without data."""
    from archc.runtime.evaluate import score as task_score
    from archc.runtime.session import EVAL_BATCH

    if ev.y is None:
        return None
    outputs = model.run(ev.feeds, batch_size=EVAL_BATCH)
    return Scored(task_score(model, outputs, ev.y), outputs)


def main_metric(model: Any, metrics: dict[str, float]) -> tuple[str | None, bool]:
    """(name of the task's own metric, higher is better); the first metric when the task's is not among them."""
    from archc.tasks.base import for_model

    cls = for_model(model)
    name = cls.metric if cls.metric in metrics else next(iter(metrics), None)
    return name, cls.higher_is_better if name == cls.metric else False


def worsening(before: float, after: float, higher_is_better: bool) -> tuple[float, str]:
    """How much worse `after` is: percentage points for a metric in [0, 1] where higher is better (accuracy),
    else percent of the base value (errors, losses); negative when the variant is better."""
    if higher_is_better and 0.0 <= before <= 1.0:
        return (before - after) * 100.0, "points"
    change = (before - after) if higher_is_better else (after - before)
    return change / abs(before) * 100.0 if before else (0.0 if change == 0 else float("inf")), "%"


# ---- writing ---------------------------------------------------------------------------------------------------

def default_output(model_path: Path, method: str) -> Path:
    """MODEL.onnx -> MODEL.int8.onnx / MODEL.int8-static.onnx / MODEL.fp16.onnx, beside it."""
    return model_path.with_name(f"{model_path.stem}.{SUFFIXES[method]}.onnx")


def check_target(model_path: Path, out: Path) -> None:
    """The target is a file in an existing folder, and never the input model itself."""
    if out.is_dir():
        raise InputError(f"expected a file to write, received a directory: '{out}'", where="--output")
    if not out.parent.exists():
        raise InputError(f"no such directory: '{out.parent}'", where="--output")
    if out.exists() and out.resolve() == model_path.resolve():
        raise InputError(f"expected an output other than the input model, received '{out}'", where="--output",
                         hint="the base model is kept; name another file with -o")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _set_metadata(path: str, meta: dict[str, str]) -> None:
    """Replace the file's metadata_props with `meta` (the base's archc.* plus archc.quantization), check it."""
    import onnx

    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta)
    onnx.save_model(model, path)
    onnx.checker.check_model(path, full_check=False)


def make_variant(base: Any, base_path: Path, method: str, out: Path, ev: Evaluation, before: Scored | None,
                 max_drop: float, force: bool) -> VariantReport:
    """Write one variant to `out` atomically, scored against the base; a variant worse than `max_drop` is
    written only with `force` (VariantReport.written says which)."""
    import onnx
    from archc.runtime import Model

    start = time.perf_counter()
    try:
        with temp_beside(out) as tmp:
            try:
                variants.write(method, str(base_path), tmp, ev.calibration)
            except Exception as e:  # the quantizers raise many kinds; say which method failed, in one line
                detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise ExportError(f"{method} failed: {detail}", file=str(base_path)) from e
            try:
                variant = Model.open(tmp, device="cpu")
            except ModelError as e:
                raise ExportError(f"the {method} variant does not load in ONNX Runtime: "
                                  f"{e.message.split('ONNX Runtime reported: ')[-1]}", file=str(base_path)) from None
            after = score(variant, ev)
            report = _report(base, base_path, method, out, before, after)
            report.data, report.note, report.hint = ev.description, ev.note, variants.caveat(method, tmp)
            _store(tmp, moved(base.metadata, base_path, out), report, base_path, ev)
            report.seconds = time.perf_counter() - start
            report.written = force or report.worse_by is None or report.worse_by <= max_drop
            if report.written:
                publish(tmp, out)
            return report
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the {method} variant: {str(e).splitlines()[0]}") from e


def _report(base: Any, base_path: Path, method: str, out: Path, before: Scored | None,
            after: Scored | None) -> VariantReport:
    """The comparison of one variant's scores with its base's."""
    size = base_path.stat().st_size
    if before is None or after is None:
        return VariantReport(method, str(out), size, 0, None, {}, {}, None, "", None, 0.0)
    metric, higher = main_metric(base, before.metrics)
    worse, unit = worsening(before.metrics[metric], after.metrics[metric], higher) if metric else (None, "")
    diffs = [float(np.max(np.abs(before.outputs[k].astype(np.float64) - after.outputs[k])))
             for k in before.outputs if before.outputs[k].size and k in after.outputs]
    return VariantReport(method, str(out), size, 0, metric, before.metrics, after.metrics, worse, unit,
                         max(diffs) if diffs else None, 0.0)


def _record(r: VariantReport, base_path: Path, ev: Evaluation) -> dict[str, Any]:
    """archc.quantization as stored in the variant."""
    import onnxruntime

    return {"method": r.method, "tool": f"onnxruntime {onnxruntime.__version__}",
            "base_model": base_path.name, "base_sha256": sha256_file(base_path),
            "data": ev.description or None, "not_measured": ev.note or None,
            "calibration": (ev.calibration_description or None) if r.method in NEEDS_CALIBRATION else None,
            "metric": r.metric, "before": r.before, "after": r.after,
            "worse_by": r.worse_by, "worse_unit": r.unit or None, "max_abs_diff": r.max_abs_diff,
            "bytes_before": r.bytes_before, "bytes_after": r.bytes_after}


def moved(meta: dict[str, str], base_path: Path, out: Path) -> dict[str, str]:
    """The base's metadata for a variant written to `out`: `archc.source`, relative to the base's folder, rebased to
    the variant's (the same text when beside it)."""
    from archc.data.sources import rebased

    source = meta.get(keys.SOURCE)
    if not source or Path(out).parent.resolve() == base_path.parent.resolve():
        return meta
    return meta | {keys.SOURCE: rebased(source, base_path.parent, Path(out).parent)}


def _store(tmp: str, base_meta: dict[str, str], r: VariantReport, base_path: Path, ev: Evaluation) -> None:
    """The base's metadata plus archc.quantization into `tmp`; its bytes_after is the size of the file that holds
    it (rewritten until the number, a few digits, no longer changes the size)."""
    for _ in range(4):
        _set_metadata(tmp, dict(base_meta) | {META_KEY: strict_json.dumps(_record(r, base_path, ev))})
        size = os.path.getsize(tmp)
        if size == r.bytes_after:
            return
        r.bytes_after = size


def with_files(files: list[tuple[Path, Path]], make: Callable[[], VariantReport]) -> VariantReport:
    """`make()` with the (source, copy) files in place beside the variant (a variant is scored where it is written,
    and reads its tokenizer.json there); the copies made here are removed again unless the variant is written."""
    made = [dst for src, dst in files if not dst.exists()]
    for src, dst in files:
        if dst in made:
            write_bytes_atomic(dst, src.read_bytes())
    written = False
    try:
        report = make()
        written = report.written
        return report
    finally:
        for dst in made if not written else ():
            dst.unlink(missing_ok=True)


def quantize(model_path: str | os.PathLike, methods: list[str], output: str | os.PathLike | None = None,
             data: str | None = None, split: str = "test", max_drop: float = DEFAULT_MAX_DROP,
             force: bool = False, on_report: Callable[[VariantReport], None] | None = None) -> list[VariantReport]:
    """Write each of `methods` (METHODS' names) of the archc model at `model_path`: to `output` (one method) or
    MODEL.<suffix>.onnx beside it; scored on `split` of `data` (default: the model's recorded source)."""
    model_path = Path(model_path)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"expected methods among {', '.join(METHODS)}, received {', '.join(unknown) or 'none'}")
    if output is not None and len(methods) != 1:
        raise InputError(f"-o names one file, but {len(methods)} variants were asked for ({', '.join(methods)})",
                         where="--output", hint="leave -o out: each goes to MODEL.<method>.onnx")
    targets = {m: Path(output) if output is not None else default_output(model_path, m) for m in methods}
    for out in targets.values():
        check_target(model_path, out)
    base = open_base(model_path)
    source = data or recorded_source(base)
    from archc.data.sources import paths_read
    from archc.outputs import carried, check_writes
    from archc.runtime.kvcache import model_files

    check_writes({"MODEL": model_files(model_path), "--data": paths_read(source)},
                 {"--output" if output is not None else "MODEL": list(targets.values())})
    beside = {method: carried(_json(base.metadata.get(keys.TOKENIZER, "")), model_path.parent, out, "the model's")
              for method, out in targets.items()}  # its tokenizer.json, checked before any variant is written
    ev = evaluation(base, source, data is not None, split,
                    any(m in NEEDS_CALIBRATION for m in methods))
    before = score(base, ev)
    reports = []
    for method in methods:
        report = with_files(beside[method], lambda: make_variant(base, model_path, method, targets[method], ev,
                                                                 before, max_drop, force))
        reports.append(report)
        if on_report is not None:
            on_report(report)
    return reports
