"""Open an exported model with ONNX Runtime: providers, signature, metadata, checked runs (no torch)."""
from __future__ import annotations

import ctypes
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from archc.data.lazy import chunks, is_lazy
from archc.errors import InputError, ModelError
import archc.metadata as keys

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
# The batch a whole split is run in where no --batch-size is given: `archc infer` on labelled data, the training
# run's test report and `archc quantize`'s scores.
EVAL_BATCH = 1024

# ONNX Runtime reports element types as "tensor(<onnx name>)"; we speak numpy names.
_ORT_DTYPES = {
    "float": "float32", "double": "float64", "float16": "float16", "bfloat16": "bfloat16",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "bool": "bool", "string": "str",
}


@dataclass(frozen=True)
class TensorSig:
    """A model input or output: name, shape (int fixed, str symbolic, None unknown), numpy dtype name."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str
    kind: str | None = None  # outputs only: logits | probs | log_probs | values

    def describe(self) -> str:
        """Render as `[batch, 1, 28, 28] float32` for messages."""
        return f"{format_shape(self.shape)} {self.dtype}"


def format_shape(shape: tuple | list) -> str:
    """`[batch, 1, 28, 28]`: symbolic names unquoted, unknown dims as `?`."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True only when a CUDA device is usable by the driver and ORT ships the CUDA provider."""
    try:
        import onnxruntime as ort

        if CUDA not in ort.get_available_providers():
            return False
        # ORT lists CUDA even on CPU-only machines, so ask the driver directly (silently).
        lib = ctypes.CDLL("libcuda.so.1")
        if lib.cuInit(0) != 0:
            return False
        count = ctypes.c_int(0)
        return lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except Exception:  # no driver library, missing symbols, odd platforms: all mean "no CUDA"
        return False


def choose_providers(device: str = "auto") -> list[str]:
    """Execution providers for `device` (auto | cpu | cuda), CPU always last as the fallback."""
    if device not in DEVICES:
        raise InputError(f"unknown device: expected one of {', '.join(DEVICES)}, received {device!r}")
    if device == "cpu":
        return [CPU]
    if cuda_available():
        return [CUDA, CPU]
    if device == "cuda":
        raise InputError("device 'cuda' requested, but no usable CUDA GPU was found",
                         hint="use --device cpu or --device auto")
    return [CPU]


def _json_meta(meta: dict[str, str], key: str) -> Any:
    """Parse one JSON-valued archc metadata entry; None when absent."""
    if key not in meta:
        return None
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise ModelError(f"metadata {key!r}: expected JSON, received {meta[key][:60]!r} ({exc.msg})")
    except RecursionError:
        raise ModelError(f"metadata {key!r}: expected JSON of reasonable nesting depth, received one nested too "
                         "deeply") from None


def checked_preprocess(value: Any, inputs: list[str], where: str, file: str = "") -> dict[str, dict]:
    """The `(x - mean) / std` statistics by input name ({} for None), checked whole before any is applied: a table of
    the model's inputs, each {mean, std} of a finite number or a non-empty list of them (one per channel, equal
    lengths), std non-zero. ModelError naming `where` otherwise: an unknown name would be skipped silently, a nan
    or a string would surface as a crash or as wrong predictions."""
    if value is None:
        return {}

    def bad(what: str, received: Any) -> ModelError:
        return ModelError(f"{what}, received {received!r:.120}", where=where, file=file)

    if not isinstance(value, dict):
        raise bad("expected a table {input: {mean, std}}", value)
    for name, entry in value.items():
        if name not in inputs:
            raise bad(f"expected the statistics of the model's inputs ({', '.join(inputs)})", name)
        if not isinstance(entry, dict) or not entry or set(entry) - {"mean", "std"}:
            raise bad(f"{name}: expected a table {{mean, std}}", entry)
        sizes = set()
        for key, v in entry.items():
            items = v if isinstance(v, list) else [v]
            if not items or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                    for x in items):
                raise bad(f"{name}.{key}: expected a finite number or a non-empty list of them", v)
            if key == "std" and any(x == 0 for x in items):
                raise bad(f"{name}.std: expected non-zero numbers", v)
            if isinstance(v, list) and len(v) > 1:
                sizes.add(len(v))
        if len(sizes) > 1:
            raise bad(f"{name}: expected mean and std of one length (one per channel)", entry)
    return value


def _graph_sig(arg: Any) -> TensorSig:
    """A TensorSig from an ORT NodeArg (foreign models, or names missing from archc metadata)."""
    inner = arg.type[len("tensor("):-1] if arg.type.startswith("tensor(") else arg.type
    shape = tuple(d if isinstance(d, (int, str)) else None for d in (arg.shape or ()))
    return TensorSig(arg.name, shape, _ORT_DTYPES.get(inner, inner))


def _sigs(args: list, described: dict | None) -> dict[str, TensorSig]:
    """Graph order and names; shapes/dtypes/kinds from archc metadata where it describes a name."""
    out: dict[str, TensorSig] = {}
    for arg in args:
        sig = _graph_sig(arg)
        info = (described or {}).get(arg.name)
        if isinstance(info, dict):
            shape = info.get("shape")
            shape = tuple(shape) if isinstance(shape, list) else sig.shape
            sig = TensorSig(arg.name, shape, str(info.get("dtype") or sig.dtype), info.get("kind"))
        out[arg.name] = sig
    return out


# The parity check's session optimizes the graph as `archc infer` will (ORT_ENABLE_ALL: its fusions are checked too)
# up to this many spec nodes, and past it runs the graph as written (ORT_DISABLE_ALL): ONNX Runtime's optimizers
# grow faster than linearly in the node count and would dominate a large build. Session creation, ORT 1.31, 2 loaded
# cores, for bench_compile's deep-N graph (N linear+relu nodes: 2N ONNX nodes, 2N initializers), ENABLE_ALL against
# DISABLE_ALL: N = 1,000 0.08-0.12 s against 0.09-0.10 s; 2,000 (one thread) 0.7 s against 0.5 s; 10,000 5.6-10.1 s
# against 1.8-2.3 s (BASIC 5.8-7.6 s, EXTENDED 15.6-18.0 s). What DISABLE_ALL leaves is ORT's own load, ~quadratic in
# the initializer count and outside archc's reach (30,000 Adds with an initializer each 3.1 s, 10,000 0.5 s; the same
# Adds on one shared initializer grow linearly). Either way the check runs the file's graph under ONNX Runtime and
# compares its outputs with torch's. `session.disable_prepacking` is not set for these: it made creation slower
# (10,000 nodes 6.4 s against 2.2 s; 30,000 Adds 17.4 s against 2.1 s). It is set where the weights are shared
# (`shared` below: models past 64 MiB of weights), where a packed copy of every weight is what the check must not make.
OPTIMIZED_UP_TO = 2_000


def check_session(model: str | bytes, nodes: int = 0, shared: dict[str, Any] | None = None) -> Any:
    """A CPU onnxruntime session for the export's own checks (a file path or a serialized model), ORT's log silenced:
    a model it cannot load raises, and each check says what failed in its own words. `nodes`: the spec's node count,
    past OPTIMIZED_UP_TO the graph is run as written (no ORT graph optimization; see above). `shared` ({name: numpy
    array}): initializers taken from those arrays' own memory (SessionOptions.add_initializer: no copy; the file's
    external data they replace is not read), kept alive with the session: archc.export.stream, for models past
    archc.graph.memory.SHARED_FROM bytes of weights, where memory, not session time, is what counts."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    if nodes > OPTIMIZED_UP_TO:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if shared:  # no packed copies of the weights for the parity runs (MatMul's B, Conv's W)
        opts.add_session_config_entry("session.disable_prepacking", "1")
    values = []
    for name, array in (shared or {}).items():
        values.append(ort.OrtValue.ortvalue_from_numpy(array))
        opts.add_initializer(name, values[-1])
    # ... and no folded copies of them either (MatMul(x, Transpose(W)), the emitter's linear: the transpose
    # then runs in each of the check's runs, one weight at a time)
    disabled = ["ConstantFolding"] if shared else []
    sess = ort.InferenceSession(model, opts, providers=[CPU], disabled_optimizers=disabled)
    sess._archc_shared = (opts, values)  # the buffers must outlive the session
    return sess


def session_options(threads: int | None = None) -> Any:
    """The onnxruntime.SessionOptions `archc infer` runs with (the export's optimizer times its graphs with them).
    `threads`: ORT's intra-op threads (None: its default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: no provider chatter on stderr
    # No busy-waiting between runs: on a small shared CPU the spinning threads steal the cores the next run
    # needs. Measured on 2 loaded cores: a GPT forward 12 ms -> 4 ms, generation 1.4-2x faster; on idle
    # cores spinning was ~15% faster (2.2 vs 2.6 ms), a smaller loss than the gain under load.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        opts.intra_op_num_threads = threads
    return opts


class Model:
    """An exported model opened with ONNX Runtime."""

    def __init__(self, session: Any, path: str = "", allow_nonfinite: bool = False) -> None:
        self.session = session
        self.path = path
        # NaN/inf in a float input yield confident-looking garbage: refused unless the caller opts in.
        self.allow_nonfinite = allow_nonfinite
        self.providers: list[str] = list(session.get_providers())
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map or {})
        task = _json_meta(self.metadata, keys.TASK)
        self.task: dict | None = task if isinstance(task, dict) else None
        labels = (self.task or {}).get("labels")
        if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)
                                       and len(set(labels)) == len(labels)):  # a text "abc" named classes a, b, c
            raise ModelError(f"labels: expected null or a list of distinct class names, received {labels!r:.80}",
                             where="metadata 'archc.task'", file=path)
        described = _json_meta(self.metadata, keys.INPUTS)
        self.inputs = _sigs(session.get_inputs(), described)
        # A numeric column of a model that takes a row (archc.export.tabular): NaN is a missing cell, which the
        # graph imputes; inf is still refused.
        self.nan_is_missing = {k for k, v in (described if isinstance(described, dict) else {}).items()
                               if isinstance(v, dict) and v.get("column") == "numeric"}
        self.outputs = _sigs(session.get_outputs(), _json_meta(self.metadata, keys.OUTPUTS))
        pre = _json_meta(self.metadata, keys.PREPROCESS)
        self.preprocess: dict[str, dict] = checked_preprocess(pre, list(self.inputs), "metadata 'archc.preprocess'",
                                                               file=path)
        bounds = _json_meta(self.metadata, keys.BOUNDS)  # what the layers index: axis ranges, input vocab
        self.bounds: dict[str, dict] = bounds if isinstance(bounds, dict) else {}
        self._passed: set[tuple] = set()  # feed signatures that passed check() unchanged
        self._offset = 0  # the first example's number in the whole input while run() checks one chunk of it
        self.threads: int | None = None  # ORT's intra-op threads it was opened with (None: ORT's default)

    @classmethod
    def open(cls, path: str | os.PathLike, device: str = "auto", allow_nonfinite: bool = False,
             threads: int | None = None) -> "Model":
        """Open an ONNX file; ModelError when it is missing, not ONNX, or corrupt. `allow_nonfinite` lets NaN and
        inf through the input checks (refused by default). `threads`: ORT's intra-op threads (None: its default)."""
        import onnxruntime as ort

        p = Path(path)
        if not p.exists():
            raise ModelError(f"model file not found: expected an .onnx file, received {str(p)!r}")
        if not p.is_file():
            raise ModelError(f"expected an .onnx model file, received a directory: {str(p)!r}")
        providers = choose_providers(device)
        opts = session_options(threads)
        if CUDA in providers:
            ort.set_default_logger_severity(3)  # a CUDA load failure should fall back quietly
        try:
            try:
                sess = ort.InferenceSession(str(p), sess_options=opts, providers=providers)
            except Exception:
                if providers == [CPU]:
                    raise
                # CUDA was requested but could not start: fall back silently to CPU.
                sess = ort.InferenceSession(str(p), sess_options=opts, providers=[CPU])
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"could not load {str(p)!r}: expected a valid ONNX model, "
                             f"ONNX Runtime reported: {detail}") from None
        opened = cls(session=sess, path=str(p), allow_nonfinite=allow_nonfinite)
        opened.threads = threads  # a KV-cache session beside it opens with the same (archc.runtime.kvcache)
        return opened

    # --- validation -------------------------------------------------------------------------
    def check(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        """Validate and convert feeds: names, rank, fixed dims, dtype; add a lone batch axis; preprocess."""
        key = _signature(feeds) if not self.preprocess else None
        if key is not None and key in self._passed:  # seen and passed unchanged: skip the per-call checks
            self._check_finite(feeds)  # values change between calls of one signature: always checked
            self._check_ids(feeds)
            return feeds
        if not isinstance(feeds, dict):
            raise InputError(f"expected a mapping of input names to arrays, received {type(feeds).__name__}")
        missing = [n for n in self.inputs if n not in feeds]
        unknown = [n for n in feeds if n not in self.inputs]
        if missing or unknown:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(repr(n) for n in missing))
            if unknown:
                parts.append("unknown " + ", ".join(repr(n) for n in unknown))
            raise InputError(f"expected inputs {', '.join(repr(n) for n in self.inputs)}, "
                             f"received {', '.join(repr(str(n)) for n in feeds) or 'none'} ({'; '.join(parts)})")
        out = {name: self._check_one(self.inputs[name], feeds[name]) for name in self.inputs}
        self._check_symbols(out)
        self._check_bounds(out)
        self._check_finite(out)
        self._check_ids(out)
        if key is not None and all(out[n] is feeds[n] for n in out) and len(self._passed) < 256:
            self._passed.add(key)
        return {name: self._preprocess(name, arr) for name, arr in out.items()}

    def _check_one(self, sig: TensorSig, value: Any) -> np.ndarray:
        """One input: shape against the signature, then a safe dtype cast."""
        try:
            arr = np.asarray(value)
        except ValueError:  # ragged nested lists
            raise InputError(f"input {sig.name!r}: expected shape {sig.describe()}, "
                             "received a ragged nested list (rows of different lengths)") from None

        def fail(extra: str = "") -> InputError:
            got = "non-numeric values" if arr.dtype.kind in "USO" else str(arr.dtype)
            return InputError(f"input {sig.name!r}: expected shape {sig.describe()}, "
                              f"received {format_shape(arr.shape)} {got}{extra}")

        rank = len(sig.shape)
        batchable = rank > 0 and (sig.shape[0] is None or isinstance(sig.shape[0], str) or sig.shape[0] == 1)
        # One example without its batch axis: accept it as a batch of one.
        if batchable and arr.ndim == rank - 1 and _dims_match(sig.shape[1:], arr.shape):
            arr = arr[np.newaxis]
        if arr.ndim != rank or not _dims_match(sig.shape, arr.shape):
            raise fail()
        return _cast(arr, sig, fail, self._offset)

    def _check_symbols(self, arrays: dict[str, np.ndarray]) -> None:
        """A symbolic axis name (e.g. batch) must have one size across all inputs."""
        seen: dict[str, tuple[int, str]] = {}
        for name, arr in arrays.items():
            for dim, size in zip(self.inputs[name].shape, arr.shape):
                if not isinstance(dim, str):
                    continue
                if dim in seen and seen[dim][0] != size:
                    first, other = seen[dim]
                    raise InputError(f"input {name!r}: expected axis {dim!r} = {first} "
                                     f"(as in input {other!r}), received {size}")
                seen.setdefault(dim, (size, name))

    def _check_bounds(self, arrays: dict[str, np.ndarray]) -> None:
        """Symbolic axes inside the sizes the model's layers index (a position table's max_len), as validate
        checked [axes]; ONNX Runtime would fail inside the graph or broadcast a one-row table silently."""
        axes = self.bounds.get("axes") or {}
        for name, arr in arrays.items():
            for dim, size in zip(self.inputs[name].shape, arr.shape):
                b = axes.get(dim) if isinstance(dim, str) else None
                if not isinstance(b, dict):
                    continue
                low, high = b.get("min") or 1, b.get("max")
                if size < low or (high is not None and size > high):
                    want = f"{low}..{high}" if high is not None and low > 1 else f"at most {high}" if high is not None \
                        else f"at least {low}"
                    raise InputError(f"input {name!r}: expected axis {dim!r} of {want}, received {size}",
                                     hint=f"the model's layers need it: {b.get('why', '')}")

    def _check_ids(self, arrays: dict[str, np.ndarray]) -> None:
        """Ids of an int64 input inside its vocab (an embedding's rows): ONNX Runtime's Gather would fail."""
        for name, vocab in (self.bounds.get("vocab") or {}).items():
            arr = arrays.get(name)
            if not isinstance(vocab, int) or not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu" \
                    or not arr.size or (arr.min() >= 0 and arr.max() < vocab):
                continue
            first = np.argwhere((arr < 0) | (arr >= vocab))[0]
            raise InputError(f"input {name!r}: expected ids in 0..{vocab - 1} (the model's vocab), received "
                             f"{int(arr[tuple(first)])} at {_position(first, self._offset)}")

    def _check_finite(self, arrays: dict[str, np.ndarray]) -> None:
        """Float inputs hold only finite numbers, unless allow_nonfinite; InputError with the count and where."""
        if self.allow_nonfinite:
            return
        for name, arr in arrays.items():
            if arr.dtype.kind != "f" or np.isfinite(arr).all():
                continue
            bad = np.isinf(arr) if name in self.nan_is_missing else ~np.isfinite(arr)
            if not bad.any():
                continue
            raise InputError(f"input {name!r}: expected finite numbers, received {int(bad.sum())} NaN or inf "
                             f"value(s), the first at {_position(np.argwhere(bad)[0], self._offset)}",
                             hint="clean or impute the data; in Python, Model.open(path, allow_nonfinite=True) "
                                  "runs them anyway")

    def _preprocess(self, name: str, arr: np.ndarray) -> np.ndarray:
        """Apply the exporter's `(x - mean) / std`; list stats broadcast over channel axis 1."""
        spec = self.preprocess.get(name)
        if not isinstance(spec, dict) or arr.dtype.kind != "f":
            return arr
        stats = []
        for key, default in (("mean", 0.0), ("std", 1.0)):
            v = np.asarray(spec.get(key, default), dtype=arr.dtype)
            if v.ndim == 1 and v.size > 1:
                if arr.ndim < 2 or arr.shape[1] != v.size:
                    raise InputError(f"input {name!r}: preprocess {key} has {v.size} channels, "
                                     f"expected axis 1 of size {v.size}, received {format_shape(arr.shape)}")
                v = v.reshape((v.size,) + (1,) * (arr.ndim - 2))
            elif v.ndim > 1:
                raise ModelError(f"metadata 'archc.preprocess' {name}.{key}: expected a number or a list, "
                                 f"received shape {format_shape(v.shape)}")
            stats.append(v.reshape(()) if v.size == 1 else v)
        mean, std = stats
        if np.any(std == 0):
            raise ModelError(f"metadata 'archc.preprocess' {name}.std: expected non-zero, received 0")
        return ((arr - mean) / std).astype(arr.dtype, copy=False)

    # --- running ----------------------------------------------------------------------------
    def run(self, feeds: dict[str, Any], batch_size: int | None = None) -> dict[str, np.ndarray]:
        """check(), then run in chunks of batch_size along axis 0 (when given) and concatenate. A lazy feed
        (archc.data.lazy) is read a chunk of at most CHUNK_BYTES decoded at a time, each checked and run so."""
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch size: expected a positive integer, received {batch_size}")
        if isinstance(feeds, dict) and any(is_lazy(v) for v in feeds.values()):
            return self._run_lazy(feeds, batch_size)
        checked = self.check(feeds)
        names = [o for o in self.outputs]
        n = _batch_len(self.inputs, checked)
        if batch_size is None or n is None or n <= batch_size:
            return dict(zip(names, self._run_once(names, checked)))
        parts = [self._run_once(names, {k: v[i:i + batch_size] for k, v in checked.items()})
                 for i in range(0, n, batch_size)]
        return {name: np.concatenate([p[j] for p in parts], axis=0) for j, name in enumerate(names)}

    def _run_lazy(self, feeds: dict[str, Any], batch_size: int | None) -> dict[str, np.ndarray]:
        """run() over feeds of which some are lazy: their examples read chunk by chunk (the others sliced alike),
        so that no more than a chunk is decoded at once; the outputs concatenated."""
        sizes = {len(v) for v in feeds.values()}
        if len(sizes) != 1:
            raise InputError(f"expected inputs of one batch length, received "
                             f"{', '.join(f'{k!r} {len(v)}' for k, v in feeds.items())}")
        n = sizes.pop()
        example = sum(v.nbytes // max(1, len(v)) for v in feeds.values() if is_lazy(v))
        parts = []
        try:
            for start, stop in chunks(n, example, batch_size):
                self._offset = start
                parts.append(self.run({k: v[start:stop] for k, v in feeds.items()}, batch_size))
        finally:
            self._offset = 0
        return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]} if parts else \
            self.run({k: v[:0] for k, v in feeds.items()}, batch_size)

    def _run_once(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One session.run; ORT failures become a ModelError (inputs were already validated)."""
        try:
            return [np.asarray(a) for a in self.session.run(names, feeds)]
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"running the model failed: expected it to accept the validated inputs, "
                             f"ONNX Runtime reported: {detail}") from None

    def __repr__(self) -> str:
        sig = ", ".join(f"{s.name}: {s.describe()}" for s in self.inputs.values())
        return f"Model({self.path!r}, inputs=({sig}), providers={self.providers})"


def _dims_match(expected: tuple, shape: tuple) -> bool:
    """Same rank and every fixed (int) dim equal; symbolic/unknown dims match anything."""
    return len(expected) == len(shape) and all(
        not isinstance(d, int) or d == s for d, s in zip(expected, shape))


def _cast(arr: np.ndarray, sig: TensorSig, fail, offset: int = 0) -> np.ndarray:
    """Cast to the signature dtype when no information is lost in meaning; refuse float→int."""
    try:
        target = np.dtype(sig.dtype)
    except TypeError:  # e.g. bfloat16 without ml_dtypes: let ORT judge
        return arr
    if arr.dtype == target:
        return arr
    src = arr.dtype.kind
    if target.kind == "f" and src in "fiub":
        # Numbers into a float input (float64/float16/ints → float32): the usual, expected case. A finite value
        # beyond the target's range is refused by place, not turned into inf behind a numpy warning.
        with np.errstate(over="ignore"):
            out = arr.astype(target)
        lost = np.isinf(out) & np.isfinite(arr) if src in "fi" and arr.size else None
        if lost is not None and lost.any():
            first = np.argwhere(lost)[0]
            raise InputError(f"input {sig.name!r}: expected values within {target}'s range (magnitude at most "
                             f"{float(np.finfo(target).max):.4g}), received {arr[tuple(first)]:g} at "
                             f"{_position(first, offset)}")
        return out
    if target.kind in "iu" and src in "iub":
        if np.can_cast(arr.dtype, target, "safe"):
            return arr.astype(target)
        # A narrowing int cast is fine only when every value fits (JSON ints arrive as int64).
        info = np.iinfo(target)
        if arr.size == 0 or (arr.min() >= info.min and arr.max() <= info.max):
            return arr.astype(target)
        raise fail(f" (values outside the {target} range)")
    if target.kind == "b" and src == "b":
        return arr.astype(target)
    if target.kind in "iu" and src == "f":
        raise fail(" (refusing to cast floating-point values to an integer input)")
    if target.kind in "US" and src in "USO":
        return arr.astype(object)  # ORT's string tensors are numpy object arrays
    raise fail()


def _position(index: np.ndarray, offset: int = 0) -> str:
    """Where a value sits in a batched input: 'example 3, feature 1' (feature as a tuple past rank 2); `offset`: the
    first example's number when the array is a chunk of the input."""
    if len(index) == 0:
        return "the scalar"
    where = f"example {int(index[0]) + offset}"
    rest = [int(i) for i in index[1:]]
    if len(rest) == 1:
        return f"{where}, feature {rest[0]}"
    return f"{where}, feature ({', '.join(map(str, rest))})" if rest else where


def _batch_len(inputs: dict[str, TensorSig], arrays: dict[str, np.ndarray]) -> int | None:
    """The shared axis-0 length when every input has a non-fixed batch axis; else None (no chunking)."""
    sizes = set()
    for name, arr in arrays.items():
        first = inputs[name].shape[0] if inputs[name].shape else 0
        if isinstance(first, int) or arr.ndim == 0:
            return None
        sizes.add(arr.shape[0])
    return sizes.pop() if len(sizes) == 1 else None


def _signature(feeds: Any) -> tuple | None:
    """(name, shape, dtype) of each array fed, or None when the feeds are not all ndarrays."""
    if not isinstance(feeds, dict) or not all(type(v) is np.ndarray for v in feeds.values()):
        return None
    return tuple((k, v.shape, v.dtype.str) for k, v in feeds.items())
