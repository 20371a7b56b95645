"""`archc quantize`: int8 (dynamic, static) and fp16 variants, scored against their base on the held-out split."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.export import quantize as q
from archc.runtime import Model
from archc.tasks import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["int8-dynamic", "int8-static", "fp16"]
CNN = {  # a small convolutional classifier of the 8x8 digits: the Conv paths of both int8 methods
    "archc": 1, "model": {"name": "small-cnn"},
    "inputs": {"image": {"shape": [1, 8, 8], "dtype": "float32"}},
    "task": {"kind": "classification"},
    "layers": [{"op": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1, "act": "relu"},
               {"op": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1, "act": "relu"},
               {"op": "flatten"}, {"id": "logits", "op": "linear", "out_features": 10}],
    "train": {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 3e-3}},
    "data": {"source": "sklearn:digits", "normalize": True},
}


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the suite runs with -n 2 on two cores
    yield
    torch.set_num_threads(threads)


def trained(folder: Path, spec: Path | dict, epochs: int | None = None) -> Path:
    from archc import train

    train.run(spec, out=folder / "run", epochs=epochs, batch_size=64, quiet=True)
    return folder / "run" / "model.onnx"


@pytest.fixture(scope="module")
def mlp(tmp_path_factory, one_thread) -> Path:
    """specs/digits_mlp.toml trained for 3 epochs (about 97% test accuracy)."""
    return trained(tmp_path_factory.mktemp("mlp"), ROOT / "specs" / "digits_mlp.toml", epochs=3)


@pytest.fixture(scope="module")
def variants(mlp) -> dict[str, q.VariantReport]:
    return {r.method: r for r in q.quantize(mlp, METHODS)}


def test_variants_are_smaller_and_score_as_infer_rescores_them(mlp, variants):
    base = cli("infer", mlp, "--input", "sklearn:digits", "--json")
    assert base.exit_code == 0, base.output
    before = json.loads(base.output)["metrics"]["accuracy"]
    for method, r in variants.items():
        path = Path(r.path)
        assert path == mlp.with_name(f"model.{q.SUFFIXES[method]}.onnx") and r.written
        assert r.bytes_after == path.stat().st_size < r.bytes_before == mlp.stat().st_size
        assert r.bytes_before / r.bytes_after > (3 if method.startswith("int8") else 1.8)
        # `archc infer` runs the variant unchanged, and scores it as recorded
        done = cli("infer", path, "--input", "sklearn:digits", "--json")
        assert done.exit_code == 0, done.output
        after = json.loads(done.output)["metrics"]["accuracy"]
        assert r.metric == "accuracy" and r.before["accuracy"] == before and r.after["accuracy"] == after
        assert r.worse_by == pytest.approx((before - after) * 100) and r.unit == "points"
        assert abs(r.worse_by) <= 2.0, (method, before, after)  # int8/fp16 of a trained MLP: about unchanged
        assert 0 < r.max_abs_diff < 2.0  # logits move a little; the metric above is the check
        assert r.hint == ""  # no convolutions: no speed caveat


def test_variant_metadata_is_the_base_plus_its_record(mlp, variants):
    base = meta(mlp)
    for method, r in variants.items():
        got = meta(Path(r.path))
        assert {k: got[k] for k in base} == base  # task, labels, bounds, preprocessing, spec: intact
        record = json.loads(got[q.META_KEY])
        assert record["method"] == method and record["base_sha256"] == sha(mlp)
        assert record["bytes_before"] == mlp.stat().st_size and record["bytes_after"] == Path(r.path).stat().st_size
        assert record["before"] == r.before and record["after"] == r.after and record["metric"] == "accuracy"
        assert record["data"] == "sklearn:digits, test split, 359 examples"
        assert (record["calibration"] is not None) == (method == "int8-static")
        model = Model.open(r.path)
        assert model.preprocess == Model.open(mlp).preprocess and model.task["labels"] == [str(i) for i in range(10)]


def test_fp16_keeps_float32_inputs_and_outputs(variants):
    model = onnx.load(variants["fp16"].path)
    onnx.checker.check_model(model)
    float32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == float32 for v in [*model.graph.input, *model.graph.output])
    kinds = {t.data_type for t in model.graph.initializer if t.dims}
    assert kinds == {onnx.TensorProto.FLOAT16}, kinds  # every weight halved
    assert Model.open(variants["fp16"].path).inputs["image"].dtype == "float32"


def test_static_is_calibrated_qdq_and_dynamic_quantizes_at_run_time(variants):
    ops = {m: {n.op_type for n in onnx.load(variants[m].path).graph.node} for m in ("int8-dynamic", "int8-static")}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops["int8-dynamic"]
    assert "QuantizeLinear" not in ops["int8-dynamic"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops["int8-static"]
    assert "DynamicQuantizeLinear" not in ops["int8-static"]
    record = json.loads(meta(Path(variants["int8-static"].path))[q.META_KEY])
    assert record["calibration"] == "sklearn:digits, train split, 512 of 1258 examples"


def test_convolutions_quantize_both_ways(tmp_path, one_thread):
    model = trained(tmp_path, CNN)
    reports = q.quantize(model, METHODS)
    for r in reports:
        ops = {n.op_type for n in onnx.load(r.path).graph.node}
        if r.method == "int8-dynamic":
            assert "ConvInteger" in ops and "runs several times slower" in r.hint
        elif r.method == "int8-static":  # Conv reads dequantized int8 weights and activations
            assert "Conv" in ops and "DequantizeLinear" in ops
        assert abs(r.worse_by) <= 3.0, r
        done = cli("infer", r.path, "--input", "sklearn:digits")
        assert done.exit_code == 0 and f"accuracy {r.after['accuracy']:.4f}" in done.output, done.output


def test_cli_prints_each_variant(mlp, tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(mlp, model)
    r = cli("quantize", model, "--int8", "static", "--split", "val")
    assert r.exit_code == 0, r.output
    assert "wrote " + str(tmp_path / "m.int8-static.onnx") + " (int8-static): " in r.output
    assert "x smaller); accuracy 0." in r.output and "on sklearn:digits, val split, 180 examples" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8-static.onnx", "m.onnx"]
    r = cli("quantize", model, "--fp16", "-o", tmp_path / "half.onnx", "--json")
    assert r.exit_code == 0, r.output
    (record,) = json.loads(r.output)
    assert record["method"] == "fp16" and record["path"] == str(tmp_path / "half.onnx")


def test_a_variant_worse_than_max_drop_is_refused_unless_forced(mlp, tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(mlp, model)
    # max_drop -1: even an unchanged metric is 1 point more than allowed, so the refusal path runs for real
    (r,) = q.quantize(model, ["int8-dynamic"], max_drop=-1.0)
    assert not r.written and r.worse_by is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # nothing written, no temporary left
    (r,) = q.quantize(model, ["int8-dynamic"], max_drop=-1.0, force=True)
    assert r.written and Path(r.path).exists()


def test_cli_refusal_and_force(mlp, tmp_path, monkeypatch):
    model = tmp_path / "m.onnx"
    shutil.copy(mlp, model)
    monkeypatch.setattr(q, "worsening", lambda before, after, higher: (5.0, "points"))  # a drop of 5 points
    r = cli("quantize", model, "--fp16")
    assert r.exit_code == 1
    assert f"error: {tmp_path / 'm.fp16.onnx'}: not written: accuracy" in r.output
    assert "(5.00 points worse), more than --max-drop 1 allows (--force writes it anyway)" in r.output
    assert not (tmp_path / "m.fp16.onnx").exists()
    r = CliRunner().invoke(main, ["quantize", str(model), "--fp16", "--json"])
    assert r.exit_code == 1 and "not written" in r.stderr
    assert [record["written"] for record in json.loads(r.stdout)] == [False]  # stdout: one JSON document
    r = cli("quantize", model, "--fp16", "--force")
    assert r.exit_code == 0 and "WARNING: " in r.output and "written because of --force" in r.output
    assert (tmp_path / "m.fp16.onnx").exists()
    assert cli("quantize", model, "--fp16", "--max-drop", "6").exit_code == 0


def test_bad_models_and_outputs_are_user_errors(mlp, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = cli("quantize", bad)
    assert r.exit_code == 1 and "error: could not load" in r.output
    foreign = tmp_path / "foreign.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
                                                            [x], [y]), opset_imports=[onnx.helper.make_opsetid("", 18)],
                                     ir_version=8), foreign)
    r = cli("quantize", foreign)
    assert r.exit_code == 1 and "expected a model exported by archc" in r.output
    model = tmp_path / "m.onnx"
    shutil.copy(mlp, model)
    digest = sha(model)
    r = cli("quantize", model, "--int8", "-o", model)
    assert r.exit_code == 1 and "expected an output other than the input model" in r.output and sha(model) == digest
    r = cli("quantize", model, "-o", tmp_path / "x.onnx")  # two variants, one file
    assert r.exit_code == 2 and "-o names one file" in r.output
    r = cli("quantize", model, "--fp16", "-o", tmp_path)
    assert r.exit_code == 1 and "expected a file to write, received a directory" in r.output
    r = cli("quantize", model, "--fp16", "--data", "nosuch:thing")
    assert r.exit_code == 1 and "nosuch" in r.output
    assert cli("quantize", model, "--int8").exit_code == 0
    r = cli("quantize", tmp_path / "m.int8.onnx")
    assert r.exit_code == 1 and "received a variant already quantized (int8-dynamic)" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "foreign.onnx", "m.int8.onnx", "m.onnx"]


def test_static_needs_data(tmp_path):
    spec = json.loads((ROOT / "specs" / "two_branch.json").read_text())
    spec.pop("data", None)
    (tmp_path / "s.json").write_text(json.dumps(spec))
    assert cli("build", tmp_path / "s.json", "-o", tmp_path / "m.onnx").exit_code == 0
    r = cli("quantize", tmp_path / "m.onnx", "--int8", "static")
    assert r.exit_code == 1 and "calibrates on the training data, but the model records no data source" in r.output
    r = cli("quantize", tmp_path / "m.onnx", "--int8")  # dynamic needs none: written, the metric not measured
    assert r.exit_code == 0 and "metric not measured" in r.output and "pass --data SOURCE" in r.output


@pytest.fixture(scope="module")
def examples(tmp_path_factory, one_thread):
    """kind -> model.onnx of its registry example, trained once."""
    from archc import train

    def get(kind: str) -> Path:
        folder = tmp_path_factory.mktemp(kind)
        example = REGISTRY[kind].example()
        for name, content in example.files.items():
            (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        (folder / "spec.json").write_text(json.dumps(example.spec))
        train.run(folder / "spec.json", out=folder / "run", quiet=True)
        return folder / "run" / "model.onnx"

    return get


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_task_kind_quantizes(kind, examples, monkeypatch):
    """Every kind's example: each method it supports writes a variant ONNX Runtime runs, scored as infer scores
    it (a language model's tied embedding and a GCN's scatter-add in fp16 included)."""
    from archc.runtime.evaluate import load_split, score

    model = examples(kind)
    monkeypatch.chdir(model.parents[1])  # the examples' data files are relative to their folder
    own = REGISTRY[kind].own_inputs
    methods = ["int8-dynamic", "fp16"] + ([] if own else ["int8-static"])
    for r in q.quantize(model, methods, force=True):
        variant = Model.open(r.path)
        assert meta(model).items() <= meta(Path(r.path)).items()
        if r.metric is None:  # a diffusion model scores no data source
            assert kind == "diffusion" and "cannot be scored here" in r.note
            continue
        source = q.recorded_source(variant)
        held_out = load_split(variant, source)
        assert score(variant, variant.run(held_out.feeds), held_out.y) == pytest.approx(r.after)
    if own:
        r = cli("quantize", model, "--int8", "static")
        assert r.exit_code == 1 and "use --int8 dynamic" in r.output


def test_a_relative_data_path_is_found_from_any_folder(tmp_path, monkeypatch, one_thread):
    """A spec reads its data relative to its own folder; the model records the source relative to its own folder
    (archc.source: no absolute path), so quantize scores the held-out split from anywhere without --data; a
    variant written to another folder records it relative to that one."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    np.savez(project / "data" / "d.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    spec = {"archc": 1, "model": {"name": "rel"}, "inputs": {"x": {"shape": [6]}}, "task": {"kind": "classification"},
            "layers": [{"op": "linear", "out_features": 2}], "train": {"epochs": 2},
            "data": {"source": "npz:data/d.npz"}}
    (project / "spec.json").write_text(json.dumps(spec))
    model = trained(tmp_path, project / "spec.json")
    assert meta(model)["archc.source"] == "npz:../project/data/d.npz"  # run/ and project/ sit side by side
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (r,) = q.quantize(model, ["int8-dynamic"], force=True)
    assert not r.note and r.data, (r.note, r.data)
    (r,) = q.quantize(model, ["fp16"], output=elsewhere / "v.onnx", force=True)  # another folder: rebased
    assert meta(elsewhere / "v.onnx")["archc.source"] == "npz:../project/data/d.npz" and not r.note
    (project / "data" / "d.npz").rename(project / "data" / "gone.npz")
    (r,) = q.quantize(model, ["fp16"], output=elsewhere / "w.onnx", force=True)
    assert "recorded as 'npz:../project/data/d.npz', relative to the model's folder" in r.note, r.note


def test_quantize_files_copied_beside_a_variant_are_removed_when_it_is_not_written(tmp_path):
    """A tokenizer.json copied beside a variant (to score it there) goes again when the variant is refused or fails;
    one that was there already stays."""
    from types import SimpleNamespace

    from archc.export.quantize import with_files

    src = tmp_path / "a" / "tokenizer.json"
    src.parent.mkdir()
    src.write_text("tok")
    dst = tmp_path / "b" / "tokenizer.json"
    dst.parent.mkdir()
    seen = []
    report = with_files([(src, dst)], lambda: seen.append(dst.read_text()) or SimpleNamespace(written=False))
    assert seen == ["tok"] and not report.written and not dst.exists()
    with pytest.raises(RuntimeError):
        with_files([(src, dst)], lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert not dst.exists()
    with_files([(src, dst)], lambda: SimpleNamespace(written=True))
    assert dst.read_text() == "tok"
    dst.write_text("tok")
    with_files([(src, dst)], lambda: SimpleNamespace(written=False))
    assert dst.read_text() == "tok"
