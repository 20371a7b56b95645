"""The variants `archc quantize` writes, each a function (base .onnx path, output path, calibration feeds) -> None
over ONNX Runtime's own tooling, with the graph repairs each needs (no dependency is added):
- int8-dynamic: `onnxruntime.quantization.quantize_dynamic` (int8 weights, activations quantized per batch at
  run time); works on any graph, no data needed.
- int8-static: `quantize_static` in QDQ format, activation ranges calibrated on examples of the training data's
  train split (preprocessed as `archc infer` feeds them).
- fp16: `onnxruntime.transformers.float16` (the converter onnxconverter-common ships, vendored in ORT) with
  `keep_io_types`: inputs and outputs stay float32, so `archc infer` and clients run the variant unchanged.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import warnings
from typing import Any, Callable, Iterator

import numpy as np

CALIBRATION_BATCH = 64


def _int8_dynamic(src: str, dst: str, calibration: dict[str, np.ndarray] | None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _untied(src) as plain:
        quantize_dynamic(plain, dst, weight_type=QuantType.QInt8, nodes_to_exclude=_onnx_attention(src))


def _onnx_attention(src: str) -> list[str]:
    """The nodes of ONNX's own `Attention` (opset 23, which the emitter writes). ORT's dynamic quantizer matches op
    types without their domain and takes it for its com.microsoft Attention: the QAttention it writes in its place
    does not load ('Unrecognized attribute: is_causal for operator QAttention'). Its matrix products stay float."""
    import onnx

    model = onnx.load(src, load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type == "Attention" and n.domain in ("", "ai.onnx")]


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
    import archc.tempfiles as tempfiles

    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        with tempfiles.tracked(path):  # a SIGTERM or SIGINT removes it too
            onnx.save_model(model, path)
            yield path
    finally:
        tempfiles.remove(path)


def _int8_static(src: str, dst: str, calibration: dict[str, np.ndarray] | None) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    assert calibration is not None, "checked by plan(): static needs calibration data"

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = iter(_batches(calibration, CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    from archc.export.tabular import preprocessing_nodes

    with _untied(src) as plain:  # a model that takes a row keeps its preprocessing (raw cells) in float32
        quantize_static(plain, dst, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=preprocessing_nodes(src))


# ONNX Runtime's CPU kernels of these have no float16 reduction ('add'): a GCN's ScatterND fails at run time
FP16_BLOCKED = ("ScatterND", "ScatterElements")
NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\(")


def _fp16(src: str, dst: str, calibration: dict[str, np.ndarray] | None) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from archc.export.tabular import around_core

    blocked = set(DEFAULT_OP_BLOCK_LIST) | set(FP16_BLOCKED)
    while True:  # each round keeps one more op type in float32 (one ORT has no CPU float16 kernel for)
        # float32 in and out, as the base; a model that takes a row keeps its preprocessing in float32
        model = around_core(onnx.load(src), lambda m: convert_float_to_float16(m, keep_io_types=True,
                                                                               op_block_list=sorted(blocked)))
        tidy(model.graph)
        onnx.save_model(model, dst)
        op = _op_without_kernel(dst)
        if op is None or op in blocked:
            return
        blocked.add(op)


def _op_without_kernel(path: str) -> str | None:
    """The op type ONNX Runtime's CPU provider has no kernel for in this model (float16 ones), or None."""
    from archc.runtime.session import check_session

    try:
        check_session(path)
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


def write(method: str, src: str, dst: str, calibration: dict[str, np.ndarray] | None = None) -> None:
    """The `method` variant of the model at `src` to `dst`, quietly (archc prints its own report)."""
    with _quiet():
        METHODS[method](src, dst, calibration)


def caveat(method: str, path: str) -> str:
    """A measured speed caveat of the variant at `path`, or "". ONNX Runtime's CPU ConvInteger (what dynamic
    quantization makes of a Conv) ran the residual CNN 7x slower than float32 (bench figure 10), where the static
    QDQ variant ran it 2x faster."""
    import onnx

    if method != "int8-dynamic":
        return ""
    if any(n.op_type == "ConvInteger" for n in onnx.load(path, load_external_data=False).graph.node):
        return ("its convolutions became ConvInteger, which ONNX Runtime's CPU provider runs several times slower "
                "than float32 (the residual CNN: 7x); --int8 static is smaller and faster for convolutional models")
    return ""
