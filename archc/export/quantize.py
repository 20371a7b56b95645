"""`archc quantize`: int8 and fp16 variants of an exported archc model, scored against it on held-out data.

Every variant comes from ONNX Runtime's own tooling, so no dependency is added:
- int8-dynamic: `onnxruntime.quantization.quantize_dynamic` (int8 weights, activations quantized per batch at
  run time); works on any graph, no data needed.
- int8-static: `quantize_static` in QDQ format, activation ranges calibrated on examples of the training data's
  train split (preprocessed as `archc infer` feeds them).
- fp16: `onnxruntime.transformers.float16` (the converter onnxconverter-common ships, vendored in ORT) with
  `keep_io_types`: inputs and outputs stay float32, so `archc infer` and clients run the variant unchanged.

The variant keeps every archc.* metadata entry of its base (task, labels, bounds, preprocessing) and adds
archc.quantization: method, the base file's sha256, the metric before and after on the held-out split, sizes.
Writes are atomic (a temporary file beside the target, then rename); the input is never overwritten. torch is
never imported.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from archc import strict_json
from archc.errors import ExportError, InputError, ModelError
from archc.util import default_mode, write_error

CALIBRATION_EXAMPLES = 512   # activation ranges settle well before this on the example specs
CALIBRATION_BATCH = 64
DEFAULT_MAX_DROP = 1.0       # percentage points (accuracy-like metrics) or percent of the base value (errors)
META_KEY = "archc.quantization"


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

    @property
    def ratio(self) -> float:
        return self.bytes_before / self.bytes_after if self.bytes_after else float("nan")


# ---- the methods: name -> (input model path, output path, calibration feeds) -> None ------------------------

def _int8_dynamic(src: str, dst: str, calibration: dict[str, np.ndarray] | None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _untied(src) as plain:
        quantize_dynamic(plain, dst, weight_type=QuantType.QInt8)


@contextlib.contextmanager
def _untied(src: str) -> Iterator[str]:
    """A copy of the model where each node reads its own initializers. ORT's quantizer turns Gemm(transB=1) into a
    MatMul by transposing the weight in place, which breaks every other reader of a tied weight (a language
    model's embedding table reused as its output layer: 'Incompatible dimensions for matrix multiplication')."""
    import onnx

    model = onnx.load(src)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:  # a second reader: its own copy
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__untied{copies}"
                graph.initializer.append(copy)
                node.input[i] = copy.name
                copies += 1
            seen.add(name)
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        onnx.save_model(model, path)
        yield path
    finally:
        os.unlink(path)


def _int8_static(src: str, dst: str, calibration: dict[str, np.ndarray] | None) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    assert calibration is not None, "checked by plan(): static needs calibration data"

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = iter(_batches(calibration, CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with _untied(src) as plain:
        quantize_static(plain, dst, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True)


# ONNX Runtime's CPU kernels of these have no float16 reduction ('add'): a GCN's ScatterND fails at run time
FP16_BLOCKED = ("ScatterND", "ScatterElements")
NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\(")


def _fp16(src: str, dst: str, calibration: dict[str, np.ndarray] | None) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    blocked = set(DEFAULT_OP_BLOCK_LIST) | set(FP16_BLOCKED)
    while True:  # each round keeps one more op type in float32 (one ORT has no CPU float16 kernel for)
        model = convert_float_to_float16(onnx.load(src), keep_io_types=True,  # float32 in and out, as the base
                                         op_block_list=sorted(blocked))
        tidy(model.graph)
        onnx.save_model(model, dst)
        op = _op_without_kernel(dst)
        if op is None or op in blocked:
            return
        blocked.add(op)


def _op_without_kernel(path: str) -> str | None:
    """The op type ONNX Runtime's CPU provider has no kernel for in this model (float16 ones), or None."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types; anything else is reported when the variant opens
        found = NO_KERNEL.search(str(e))
        return found.group(1) if found else None
    return None


def tidy(graph: Any) -> None:
    """Repair what the float16 converter leaves: one value feeding two blocked nodes gets two identical Casts
    (ORT: 'Duplicate definition of name'), and its input casts come last (onnx.checker: not sorted)."""
    seen: set[bytes] = set()
    kept = []
    for node in graph.node:
        key = node.SerializeToString()
        if key not in seen:
            kept.append(node)
            seen.add(key)
    del graph.node[:]
    graph.node.extend(kept)
    unique_names(graph)
    toposort(graph)


def unique_names(graph: Any) -> None:
    """Rename (in place) each node whose name an earlier node already has: NAME_2, NAME_3, ..."""
    taken = {n.name for n in graph.node}
    seen: set[str] = set()
    for node in graph.node:
        if node.name and node.name in seen:
            k = 2
            while f"{node.name}_{k}" in taken:
                k += 1
            node.name = f"{node.name}_{k}"
            taken.add(node.name)
        seen.add(node.name)


def toposort(graph: Any) -> None:
    """Reorder graph.node (in place) so each node follows the nodes producing its inputs (Kahn, stable)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes, ordered = list(graph.node), []
    waiting = nodes
    while waiting:
        rest = []
        for node in waiting:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(waiting):  # a cycle or a dangling input: leave the rest for onnx.checker to name
            ordered += rest
            break
        waiting = rest
    del graph.node[:]
    graph.node.extend(ordered)


METHODS: dict[str, Callable[[str, str, dict[str, np.ndarray] | None], None]] = {
    "int8-dynamic": _int8_dynamic,
    "int8-static": _int8_static,
    "fp16": _fp16,
}
SUFFIXES = {"int8-dynamic": "int8", "int8-static": "int8-static", "fp16": "fp16"}  # MODEL.<suffix>.onnx
NEEDS_CALIBRATION = ("int8-static",)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the quantizers' logging.warning advice ("consider pre-processing"): archc prints its own report."""
    logging.disable(logging.WARNING)
    try:  # and numpy's warnings of a constant tensor's zero range (ORT then uses scale 1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _batches(feeds: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    n = len(next(iter(feeds.values())))
    for i in range(0, n, size):
        yield {k: v[i:i + size] for k, v in feeds.items()}


# ---- the base model ------------------------------------------------------------------------------------------

def open_base(path: Path) -> Any:
    """The archc model to quantize, opened on CPU; ModelError for a missing, corrupt, foreign or quantized file."""
    from archc.runtime import Model

    model = Model.open(path, device="cpu")
    if "archc.spec" not in model.metadata or model.task is None:
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
    """The data source the model was trained on: the spec-as-used's [data] source (a --data override included)."""
    spec = _json(model.metadata.get("archc.spec", "")) or {}
    data = spec.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    return source if isinstance(source, str) and source else None


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
        return Evaluation(None, note=f"its recorded data source {source!r} cannot be scored here: {e.line()} "
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

    if ev.y is None:
        return None
    outputs = model.run(ev.feeds, batch_size=1024)
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
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        try:
            with _quiet():
                METHODS[method](str(base_path), tmp, ev.calibration)
        except Exception as e:  # the quantizers raise many kinds; say which method failed, in one line
            raise ExportError(f"{method} failed: {str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__}",
                              file=str(base_path)) from e
        try:
            variant = Model.open(tmp, device="cpu")
        except ModelError as e:
            raise ExportError(f"the {method} variant does not load in ONNX Runtime: "
                              f"{e.message.split('ONNX Runtime reported: ')[-1]}", file=str(base_path)) from None
        after = score(variant, ev)
        report = _report(base, base_path, method, out, before, after)
        report.data, report.note = ev.description, ev.note
        _store(tmp, base.metadata, report, base_path, ev)
        report.seconds = time.perf_counter() - start
        report.written = force or report.worse_by is None or report.worse_by <= max_drop
        if report.written:
            default_mode(tmp)
            os.replace(tmp, out)
        return report
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the {method} variant: {str(e).splitlines()[0]}") from e
    except OSError as e:
        raise write_error(e, out) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    """archc.quantization as stored in the variant (bytes_after: the file without this entry)."""
    import onnxruntime

    return {"method": r.method, "tool": f"onnxruntime {onnxruntime.__version__}",
            "base_model": base_path.name, "base_sha256": sha256_file(base_path),
            "data": ev.description or None, "not_measured": ev.note or None, "calibration": (ev.calibration_description or None) if r.method in NEEDS_CALIBRATION else None,
            "metric": r.metric, "before": r.before, "after": r.after,
            "worse_by": r.worse_by, "worse_unit": r.unit or None, "max_abs_diff": r.max_abs_diff,
            "bytes_before": r.bytes_before, "bytes_after": r.bytes_after}


def _store(tmp: str, base_meta: dict[str, str], r: VariantReport, base_path: Path, ev: Evaluation) -> None:
    """The base's metadata plus archc.quantization into `tmp`; its bytes_after is the size of the file that holds
    it (rewritten until the number, a few digits, no longer changes the size)."""
    for _ in range(4):
        _set_metadata(tmp, dict(base_meta) | {META_KEY: strict_json.dumps(_record(r, base_path, ev))})
        size = os.path.getsize(tmp)
        if size == r.bytes_after:
            return
        r.bytes_after = size


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
    ev = evaluation(base, data or recorded_source(base), data is not None, split,
                    any(m in NEEDS_CALIBRATION for m in methods))
    before = score(base, ev)
    reports = []
    for method in methods:
        report = make_variant(base, model_path, method, targets[method], ev, before, max_drop, force)
        reports.append(report)
        if on_report is not None:
            on_report(report)
    return reports
