"""archc.export.stream: the ONNX file written tensor by tensor from the module's own weights, and the checks that
read those weights in place (no serialized copy)."""
from __future__ import annotations

import io
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import archc.export.onnx as export_onnx
from archc.emit.graph import emit_model, to_proto
from archc.export import stream
from archc.export.passes import export, report_lines
from archc.lower import lower
from archc.pipeline import compile_spec
from archc.runtime.session import check_session

SPECS = Path(__file__).resolve().parents[2] / "specs"
# a tied embedding (int64 token inputs), RoPE, grouped attention, RMSNorm; a CNN with batch norm buffers (int64)
MODELS = ["zoo/smollm_135m.toml", "digits_mlp.toml"]


def tiny(name: str):
    """The spec; the zoo's decoder at a small size (only its [params] and traced length changed)."""
    raw = tomllib.loads((SPECS / name).read_text())
    if name.startswith("zoo/"):
        raw["params"].update(layers=2, dim=64, heads=4, kv_heads=2, ffn=128, vocab=300)
        raw["axes"]["seq"] = 8
        raw["inputs"]["tokens"]["vocab"] = 300
    c = compile_spec(raw)
    c.module = lower(c.graph, seed=0)
    return c


def same_model(a: onnx.ModelProto, b: onnx.ModelProto, meta: bool = True) -> None:
    """Equal graphs, metadata and initializers (by name: the writer puts the large ones last)."""
    assert [n.SerializeToString() for n in a.graph.node] == [n.SerializeToString() for n in b.graph.node]
    assert a.graph.input == b.graph.input and a.graph.output == b.graph.output
    if meta:
        assert {p.key: p.value for p in a.metadata_props} == {p.key: p.value for p in b.metadata_props}
    wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert wa.keys() == wb.keys() and len(wa) == len(a.graph.initializer)
    for k in wa:
        assert wa[k].dtype == wb[k].dtype and np.array_equal(wa[k], wb[k]), k


@pytest.mark.parametrize("name", MODELS)
def test_the_streamed_file_is_the_emitted_model(name):
    c = tiny(name)
    model = emit_model(c.graph, c.module.state_dict())
    split = stream.split_ir(model)
    assert split.arrays and all(a.nbytes >= stream.SMALL_BYTES for a in split.arrays.values())
    assert split.skeleton.ByteSize() < 64 * 1024  # no weight data in the skeleton
    f = io.BytesIO()
    offsets = stream.write_single(split, f)
    data = f.getvalue()
    loaded = onnx.load_from_string(data)
    onnx.checker.check_model(loaded, full_check=True)
    same_model(loaded, to_proto(emit_model(c.graph, c.module.state_dict())))
    for k, off in offsets.items():  # each offset is where the tensor's raw bytes are
        a = split.arrays[k]
        assert data[off:off + a.nbytes] == a.tobytes()
    f2 = io.BytesIO()
    stream.write_single(stream.split_ir(emit_model(c.graph, c.module.state_dict())), f2)
    assert f2.getvalue() == data  # the same bytes every time


def test_a_proto_with_weights_splits_and_writes_back_equal():
    c = tiny("digits_mlp.toml")
    proto = to_proto(emit_model(c.graph, c.module.state_dict()))
    reference = onnx.ModelProto()
    reference.CopyFrom(proto)
    split = stream.split_proto(proto)
    f = io.BytesIO()
    stream.write_single(split, f)
    same_model(onnx.load_from_string(f.getvalue()), reference)


def test_the_check_session_reads_the_arrays_in_place(tmp_path):
    """The weights handed to ONNX Runtime are the arrays' own memory: changing one changes the session's output."""
    c = tiny("digits_mlp.toml")
    split = stream.split_ir(emit_model(c.graph, c.module.state_dict()))
    with open(tmp_path / "m.onnx", "wb") as f:
        offsets = stream.write_single(split, f)
    (tmp_path / "check.onnx").write_bytes(stream.pointing(split, "m.onnx", offsets).SerializeToString())
    onnx.checker.check_model(str(tmp_path / "check.onnx"))
    sess = check_session(str(tmp_path / "check.onnx"), shared=split.arrays)
    (name, x), = export_onnx.example_inputs(c.graph, 2, {}).items()
    with torch.no_grad():
        ref = c.module(torch.from_numpy(x)).numpy()
    before = sess.run(None, {name: x})[0]
    assert np.abs(before - ref).max() < 1e-4
    first = next(iter(split.arrays))
    split.arrays[first] *= 0  # the module's own tensor (a view): the session reads it
    after = sess.run(None, {name: x})[0]
    assert not np.allclose(after, before)
    with torch.no_grad():
        assert np.abs(after - c.module(torch.from_numpy(x)).numpy()).max() < 1e-4


@pytest.mark.parametrize("external", [False, True])
def test_a_build_past_the_threshold_checks_the_weights_in_place(tmp_path, monkeypatch, external):
    """Past SHARED_FROM (here: every model) the export checks the written file through its skeleton and the
    module's arrays; past EXTERNAL_DATA_BYTES it writes `<name>.data` streamed, pages aligned."""
    monkeypatch.setattr(export_onnx, "SHARED_FROM", 0)  # archc.export.onnx reads its own name
    if external:
        monkeypatch.setattr(export_onnx, "EXTERNAL_DATA_BYTES", 1)
    seen = []
    import archc.runtime.session as session

    def spy(model, nodes=0, shared=None):
        seen.append((model, dict(shared or {})))
        return check_session(model, nodes, shared)

    monkeypatch.setattr(session, "check_session", spy)
    c = tiny("zoo/smollm_135m.toml")
    out = tmp_path / "lm.onnx"
    report = export(c, out)
    assert seen and isinstance(seen[0][0], str) and seen[0][1]  # a skeleton path, and the arrays
    assert report.max_abs_diff <= report.tolerance
    assert sorted(p.name for p in tmp_path.iterdir()) == (["lm.onnx", "lm.onnx.data"] if external else ["lm.onnx"])
    model = onnx.load(str(out))
    onnx.checker.check_model(str(out), full_check=True)
    same_model(model, to_proto(emit_model(c.graph, c.module.state_dict())), meta=False)
    if external:
        offsets = [int({e.key: e.value for e in t.external_data}["offset"]) for t in
                   onnx.load(str(out), load_external_data=False).graph.initializer if t.external_data]
        assert offsets
        weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for k, v in c.module.state_dict().items():
            if k in weights:
                assert np.array_equal(weights[k], v.numpy()), k
    tokens = np.random.default_rng(1).integers(0, 300, (2, 7), dtype=np.int64)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"tokens": tokens})[0]
    with torch.no_grad():
        ref = c.module(torch.from_numpy(tokens)).numpy()
    assert np.abs(got - ref).max() < 1e-4


@pytest.mark.parametrize("optimize", [False, True])
def test_the_kv_cache_file_reads_the_models_weights_unless_the_optimizer_rewrote_them(tmp_path, optimize):
    """model.kv.onnx's initializers point into model.onnx's own raw_data (ONNX external data, the same tensors'
    bytes): a few kB on disk, equal weights when loaded; where the optimizer rewrote model.onnx (its weights folded
    and renamed) the cache file holds its own."""
    from archc.runtime.kvcache import cache_path

    c = tiny("zoo/smollm_135m.toml")
    out = tmp_path / "lm.onnx"
    report = export(c, out, kv_cache=True, optimize=optimize)
    kv = report.kvcache
    assert kv is not None and not hasattr(kv, "why"), kv
    raw = onnx.load(str(cache_path(out)), load_external_data=False)
    pointing = {t.name: {e.key: e.value for e in t.external_data} for t in raw.graph.initializer if t.external_data}
    if optimize:
        assert kv.weights_in == "" and not pointing
        return
    assert kv.weights_in == "lm.onnx" and any("its weights are lm.onnx's" in line for line in report_lines(report))
    state = {k: v.numpy() for k, v in c.module.state_dict().items()}
    assert pointing and all(p["location"] == "lm.onnx" for p in pointing.values())
    assert cache_path(out).stat().st_size < 64 * 1024 < sum(state[k].nbytes for k in pointing)
    blob = out.read_bytes()
    for name, p in pointing.items():  # the ranges are the weights' bytes inside model.onnx
        off, n = int(p["offset"]), int(p["length"])
        assert blob[off:off + n] == np.ascontiguousarray(state[name]).tobytes(), name
    loaded = onnx.load(str(cache_path(out)))
    for t in loaded.graph.initializer:
        if t.name in state:
            assert np.array_equal(numpy_helper.to_array(t), state[t.name]), t.name


@pytest.mark.parametrize("limit, threads", [("between", None), ("below", 1)])
def test_the_decode_thread_choice_reads_the_models_weights_not_the_cache_files_size(tmp_path, monkeypatch, limit,
                                                                                     threads):
    """The cache file is a few kB when it points into model.onnx: one thread is chosen for a small model's weights
    (archc.runtime.kvcache.ONE_THREAD_BYTES), not for a small cache file."""
    import archc.runtime.kvcache as kvc
    from archc.runtime.kvcache import CachedLM, cache_path
    from archc.runtime.session import Model

    c = tiny("zoo/smollm_135m.toml")
    out = tmp_path / "lm.onnx"
    export(c, out, kv_cache=True)
    kv_size, main_size = cache_path(out).stat().st_size, out.stat().st_size
    assert kv_size < main_size
    monkeypatch.setattr(kvc, "ONE_THREAD_BYTES", (kv_size + main_size) // 2 if limit == "between" else main_size + 1)
    opened = []
    real = Model.open

    def spy(path, *a, **k):
        opened.append((str(path), k.get("threads")))
        return real(path, *a, **k)

    monkeypatch.setattr(Model, "open", staticmethod(spy))
    model = real(out)
    lm, why = CachedLM.open(model)
    assert lm is not None, why
    assert opened == [(str(cache_path(out)), threads if threads is not None else model.threads)]
