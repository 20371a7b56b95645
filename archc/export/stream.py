"""The ONNX file written tensor by tensor from the weights themselves, without a serialized copy of them in memory.

An export holds its model as a `Split`: the ModelProto with every initializer of SMALL_BYTES or more reduced to its
name, dims and type (the skeleton, a few kB to MB), and those initializers' values as numpy arrays: for the emitter,
views of the torch module's own tensors (archc.emit.graph), so no copy of the weights exists at all. From it:

- `write_single` writes one `.onnx` file: the skeleton's fields, then the graph's fields, then each initializer as a
  TensorProto whose `raw_data` is streamed from the array (the protobuf encoding written out: a length-delimited
  field is its tag, its byte length as a varint, then its bytes). Fields appear out of numeric order (the graph
  after metadata_props, the initializers after the graph's outputs), which protobuf parsers must accept (the
  encoding spec: "parsers must be able to parse fields in any order") and onnx, ONNX Runtime and onnx-ir do; a
  tool that re-saves the model writes canonical order again. The bytes are deterministic.
- `write_external` writes the skeleton with each large initializer pointing into `<name>.data` (ONNX's external
  data: location, offset, length), the data file streamed from the arrays, offsets aligned to 4 KiB (pages:
  ONNX Runtime can map aligned tensors instead of reading them).
- `pointing` gives the skeleton with its large initializers pointing into a file already written (the one-file
  model's own `raw_data` ranges or the side file): what the export's checks load (onnx.checker, and ONNX Runtime
  with the arrays passed as its initializers through SessionOptions.add_initializer, which uses the buffers
  themselves), so checking a model costs no copy of its weights either.

Peak memory of `archc build` on Qwen2-0.5B (1.98 GB of float32 weights), `/usr/bin/time -v`: 9.5 GB before this
module (the protobuf, its serialized bytes, ONNX Runtime's copy, and the traced KV-cache graph's own copies).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir

SMALL_BYTES = 1024      # tensors under this stay inside the graph's protobuf (onnx.save_model's size_threshold)
ALIGN = 4096            # external data offsets of tensors from ALIGN_FROM bytes on (page size)
ALIGN_FROM = 2**20

# protobuf field numbers (onnx.proto): ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_LEN = 2                # wire type of a length-delimited field


@dataclass
class Split:
    """A model as its skeleton (large initializers without data) and those initializers' values."""

    skeleton: "onnx.ModelProto"
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # in the graph's initializer order

    @property
    def nbytes(self) -> int:
        """The weights' bytes: the arrays and the initializers kept inside the skeleton."""
        return sum(a.nbytes for a in self.arrays.values()) + sum(t.ByteSize() for t in self.skeleton.graph.initializer
                                                                 if t.name not in self.arrays)


def split_ir(model: "ir.Model") -> Split:
    """The emitted model (onnx-ir, initializers holding numpy views of the weights) as a Split, no weight copied:
    each large initializer is serialized as an external-data placeholder, then reduced to name, dims and type.
    value_info keeps the computed values only (archc.emit.graph.to_proto says why)."""
    import onnx_ir as ir

    arrays: dict[str, np.ndarray] = {}
    kept: dict[str, Any] = {}
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is None:
            continue
        array = tensor.numpy()
        if array.nbytes < SMALL_BYTES:
            continue
        arrays[name] = np.ascontiguousarray(array)
        kept[name] = tensor
        value.const_value = ir.ExternalTensor("placeholder", 0, array.nbytes, tensor.dtype, shape=tensor.shape,
                                              name=name)
    try:
        proto = ir.serde.serialize_model(model)
    finally:
        for name, tensor in kept.items():  # the ir model stays as it was (its caller may emit it again)
            model.graph.initializers[name].const_value = tensor
    for t in proto.graph.initializer:
        if t.name in arrays:
            _bare(t)
    weights = {t.name for t in proto.graph.initializer}
    kept_info = [v for v in proto.graph.value_info if v.name not in weights]
    if len(kept_info) < len(proto.graph.value_info):
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(kept_info)
    return Split(proto, arrays)


def split_proto(model: "onnx.ModelProto") -> Split:
    """A ModelProto holding its weights (the torchscript fallback's) as a Split: the large initializers' values
    are taken out as arrays (one copy each, released from the protobuf as it goes)."""
    from onnx import numpy_helper

    arrays: dict[str, np.ndarray] = {}
    for t in model.graph.initializer:
        if t.ByteSize() >= SMALL_BYTES and t.data_location != t.EXTERNAL:
            arrays[t.name] = np.ascontiguousarray(numpy_helper.to_array(t))
            _bare(t)
    return Split(model, arrays)


def _bare(t: "onnx.TensorProto") -> None:
    """Keep a TensorProto's name, dims and type only."""
    name, dims, dtype = t.name, list(t.dims), t.data_type
    t.Clear()
    t.name, t.data_type = name, dtype
    t.dims.extend(dims)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int) -> bytes:
    return _varint(number << 3 | _LEN)


def _skeleton_parts(split: Split) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The model's fields without the graph, the graph's fields without the large initializers, and each large
    initializer's header, in order."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(split.skeleton)
    graph = model.graph
    headers = [(t.name, t.SerializeToString()) for t in graph.initializer if t.name in split.arrays]
    small = [t for t in graph.initializer if t.name not in split.arrays]
    del graph.initializer[:]
    graph.initializer.extend(small)
    graph_bytes = graph.SerializeToString()
    model.ClearField("graph")
    return model.SerializeToString(), graph_bytes, headers


def write_single(split: Split, f: BinaryIO) -> dict[str, int]:
    """Write the whole model as one protobuf to the open file `f`; returns each large initializer's raw_data
    offset in it (what `pointing` names)."""
    head, graph_bytes, headers = _skeleton_parts(split)
    entries = []
    graph_len = len(graph_bytes)
    for name, header in headers:
        n = split.arrays[name].nbytes
        tensor_len = len(header) + len(_tag(_TENSOR_RAW_DATA)) + len(_varint(n)) + n
        prefix = _tag(_GRAPH_INITIALIZER) + _varint(tensor_len) + header + _tag(_TENSOR_RAW_DATA) + _varint(n)
        entries.append((name, prefix))
        graph_len += len(prefix) + n
    offsets: dict[str, int] = {}
    pos = f.tell()
    for chunk in (head, _tag(_MODEL_GRAPH) + _varint(graph_len), graph_bytes):
        f.write(chunk)
        pos += len(chunk)
    for name, prefix in entries:
        f.write(prefix)
        pos += len(prefix)
        offsets[name] = pos
        array = split.arrays[name]
        _write_array(f, array)
        pos += array.nbytes
    return offsets


def _write_array(f: BinaryIO, array: np.ndarray) -> None:
    """The array's bytes (little-endian, as ONNX's raw_data), from its own buffer."""
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    f.write(memoryview(np.ascontiguousarray(array)).cast("B"))


def layout(split: Split) -> dict[str, int]:
    """Each large initializer's offset in the external data file, in order, aligned past ALIGN_FROM bytes."""
    offsets, pos = {}, 0
    for name, array in split.arrays.items():
        if array.nbytes >= ALIGN_FROM:
            pos = -(-pos // ALIGN) * ALIGN
        offsets[name] = pos
        pos += array.nbytes
    return offsets


def write_data(split: Split, f: BinaryIO, offsets: dict[str, int]) -> None:
    """The external data file: each large initializer's bytes at its offset (zeros between)."""
    pos = 0
    for name, array in split.arrays.items():
        if offsets[name] > pos:
            f.write(b"\0" * (offsets[name] - pos))
            pos = offsets[name]
        _write_array(f, array)
        pos += array.nbytes


def pointing(split: Split, location: str, offsets: dict[str, int]) -> "onnx.ModelProto":
    """The skeleton with each large initializer pointing at `location` (relative to the model's folder) from its
    offset: the external-data model file, or the checks' view of a one-file model."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(split.skeleton)
    for t in model.graph.initializer:
        if t.name in split.arrays:
            t.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offsets[t.name])),
                               ("length", str(split.arrays[t.name].nbytes))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
    return model


@dataclass(frozen=True)
class Placed:
    """Where a written model keeps its weights: the file (relative to the model's folder) and each large
    initializer's offset and bytes in it, with the identity of the array written there (its buffer's address and
    size), so another graph shares a weight only when it holds the very same tensor."""

    location: str
    offsets: dict[str, tuple[int, int, int]]  # name -> (offset, nbytes, buffer address)

    @staticmethod
    def of(split: Split, location: str, offsets: dict[str, int]) -> "Placed":
        return Placed(location, {name: (offsets[name], a.nbytes, _address(a)) for name, a in split.arrays.items()})

    def pointed(self, split: Split) -> Split:
        """`split` with each large initializer that is the same tensor as one written here pointing at it (external
        data); the others stay arrays, written into the file as usual."""
        same = {name: off for name, a in split.arrays.items() if name in self.offsets
                for off, n, at in [self.offsets[name]] if n == a.nbytes and at == _address(a)}
        if not same:
            return split
        view = Split(split.skeleton, {name: split.arrays[name] for name in same})
        skeleton = pointing(view, self.location, same)
        return Split(skeleton, {name: a for name, a in split.arrays.items() if name not in same})


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def write_file(path: str | os.PathLike, write: Any) -> None:
    """Open `path` (a temporary name, renamed into place once checked) for writing and call `write(f)`."""
    with open(path, "wb", buffering=2**20) as f:
        write(f)
