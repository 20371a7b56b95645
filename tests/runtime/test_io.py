"""archc.runtime.io: each input format, each output format, atomic writes, refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from archc.errors import InputError
from archc.runtime import Model, check_output_path, read_inputs, records, write_outputs

F32 = TensorProto.FLOAT


def save(path: Path, names: list[str], shape: list, meta: bool = True) -> Model:
    """An Identity-style model: each input name `n` → output `n_out` (Add of inputs when several)."""
    ins = [helper.make_tensor_value_info(n, F32, shape) for n in names]
    if len(names) == 1:
        nodes, outs = [helper.make_node("Identity", names, ["y"])], ["y"]
    else:
        nodes, outs = [helper.make_node("Add", names[:2], ["y"])], ["y"]
    graph = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", F32, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if meta:
        sig = {"shape": shape, "dtype": "float32"}
        for k, v in {"archc.task": {"kind": "regression"}, "archc.inputs": {n: sig for n in names},
                     "archc.outputs": {o: dict(sig, kind="values") for o in outs}}.items():
            model.metadata_props.add(key=k, value=json.dumps(v))
    onnx.save(model, str(path))
    return Model.open(path)


@pytest.fixture
def single(tmp_path) -> Model:
    return save(tmp_path / "single.onnx", ["x"], ["batch", 2, 3])


@pytest.fixture
def double(tmp_path) -> Model:
    return save(tmp_path / "double.onnx", ["a", "b"], ["batch", 2])


X = np.arange(12, dtype=np.float32).reshape(2, 2, 3)


def test_npy(tmp_path, single, double):
    np.save(tmp_path / "in.npy", X)
    feeds = read_inputs(tmp_path / "in.npy", single)
    np.testing.assert_array_equal(single.run(feeds)["y"], X)
    with pytest.raises(InputError) as e:
        read_inputs(tmp_path / "in.npy", double)
    assert "2 inputs (a, b)" in str(e.value) and ".npz" in str(e.value) and "in.npy" in str(e.value)


def test_npz(tmp_path, double):
    a, b = np.ones((3, 2), np.float32), np.full((3, 2), 2.0, np.float32)
    np.savez(tmp_path / "in.npz", a=a, b=b)
    np.testing.assert_array_equal(double.run(read_inputs(tmp_path / "in.npz", double))["y"], a + b)
    np.savez(tmp_path / "wrong.npz", a=a, c=b)
    with pytest.raises(InputError, match="missing 'b'; unknown 'c'"):
        double.check(read_inputs(tmp_path / "wrong.npz", double))


def test_json_three_forms(tmp_path, single, double):
    (tmp_path / "list.json").write_text(json.dumps(X.tolist()))
    np.testing.assert_array_equal(single.run(read_inputs(tmp_path / "list.json", single))["y"], X)
    (tmp_path / "obj.json").write_text(json.dumps({"a": [[1, 2]], "b": [[3, 4]]}))
    np.testing.assert_array_equal(double.run(read_inputs(tmp_path / "obj.json", double))["y"], [[4, 6]])
    recs = [{"a": [1, 2], "b": [3, 4]}, {"a": [0, 0], "b": [1, 1]}]
    (tmp_path / "recs.json").write_text(json.dumps(recs))
    np.testing.assert_array_equal(double.run(read_inputs(tmp_path / "recs.json", double))["y"],
                                  [[4, 6], [1, 1]])


def test_json_errors(tmp_path, double):
    (tmp_path / "bad.json").write_text("[1, 2,")
    with pytest.raises(InputError, match="expected valid JSON.*line 1"):
        read_inputs(tmp_path / "bad.json", double)
    (tmp_path / "list.json").write_text("[[1, 2]]")
    with pytest.raises(InputError, match="2 inputs"):
        read_inputs(tmp_path / "list.json", double)
    (tmp_path / "recs.json").write_text(json.dumps([{"a": [1, 2], "b": [1, 2]}, {"a": [1, 2]}]))
    with pytest.raises(InputError, match="record 1: expected keys a, b, missing b"):
        read_inputs(tmp_path / "recs.json", double)


@pytest.mark.parametrize("header", [True, False])
def test_csv_with_and_without_header(tmp_path, single, header):
    rows = X.reshape(2, 6)
    text = ("c0,c1,c2,c3,c4,c5\n" if header else "") + "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    (tmp_path / "in.csv").write_text(text)
    feeds = read_inputs(tmp_path / "in.csv", single)
    assert feeds["x"].shape == (2, 2, 3)
    np.testing.assert_array_equal(single.run(feeds)["y"], X)


def test_csv_errors(tmp_path, single, double):
    (tmp_path / "cell.csv").write_text("1,2,3,4,5,6\n1,2,oops,4,5,6\n")
    with pytest.raises(InputError, match=r"row 2, column 3: expected a number, received 'oops'"):
        read_inputs(tmp_path / "cell.csv", single)
    (tmp_path / "hdr.csv").write_text("a,b,c,d,e,f\n1,2,3,4,5,x\n")
    with pytest.raises(InputError, match=r"row 2, column 6 \('f'\)"):
        read_inputs(tmp_path / "hdr.csv", single)
    (tmp_path / "width.csv").write_text("1,2,3,4,5\n")
    with pytest.raises(InputError, match=r"expected 6 values per row for shape \[batch, 2, 3\], received 5"):
        read_inputs(tmp_path / "width.csv", single)
    (tmp_path / "ragged.csv").write_text("1,2,3,4,5,6\n1,2\n")
    with pytest.raises(InputError, match="row 2: expected 6 values"):
        read_inputs(tmp_path / "ragged.csv", single)
    (tmp_path / "empty.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="at least one data row"):
        read_inputs(tmp_path / "empty.csv", single)
    (tmp_path / "two.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="2 inputs"):
        read_inputs(tmp_path / "two.csv", double)


def test_unknown_missing_unreadable_input(tmp_path, single):
    with pytest.raises(InputError, match="unsupported input file type.*'.txt'"):
        read_inputs(tmp_path / "in.txt", single)
    with pytest.raises(InputError) as e:
        read_inputs(tmp_path / "absent.npy", single)
    assert "absent.npy" in str(e.value) and "not found" in str(e.value)
    (tmp_path / "junk.npy").write_bytes(b"\x00junk")
    with pytest.raises(InputError, match="junk.npy.*could not read"):
        read_inputs(tmp_path / "junk.npy", single)


def test_writers_roundtrip(tmp_path, double):
    out = double.run({"a": [[1.5, 2.0], [0.0, -1.0]], "b": [[1.0, 1.0], [2.0, 2.0]]})
    recs = records(double, out)
    assert recs == [{"y": [2.5, 3.0]}, {"y": [2.0, 1.0]}]
    write_outputs(tmp_path / "o.npy", out, recs)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), out["y"])
    write_outputs(tmp_path / "o.npz", out, recs)
    with np.load(tmp_path / "o.npz") as z:
        assert z.files == ["y"] and np.array_equal(z["y"], out["y"])
    write_outputs(tmp_path / "o.json", out, recs)
    assert json.loads((tmp_path / "o.json").read_text()) == recs
    write_outputs(tmp_path / "o.csv", out, recs)
    assert (tmp_path / "o.csv").read_text().splitlines() == ["y_0,y_1", "2.5,3.0", "2.0,1.0"]


def test_csv_writer_flattens_nested(tmp_path):
    recs = [{"label": "cat", "probability": 0.5, "top": [{"label": "cat", "probability": 0.5}]}]
    write_outputs(tmp_path / "r.csv", {}, recs)
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines == ["label,probability,top_0_label,top_0_probability", "cat,0.5,cat,0.5"]


def test_json_writer_nan_becomes_null(tmp_path):
    write_outputs(tmp_path / "n.json", {}, [{"v": float("nan"), "w": np.float32(1.5)}])
    assert json.loads((tmp_path / "n.json").read_text()) == [{"v": None, "w": 1.5}]


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    out, recs = {"y": np.ones((2, 2), np.float32)}, [{"y": [1.0, 1.0]}] * 2
    for ext in (".npy", ".npz", ".json", ".csv"):
        write_outputs(tmp_path / f"o{ext}", out, recs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv", "o.json", "o.npy", "o.npz"]
    # A failure at the final rename keeps the old file intact and cleans the temp file up.
    import archc.runtime.io as rio

    def boom(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(rio.os, "replace", boom)
    before = (tmp_path / "o.json").read_bytes()
    with pytest.raises(InputError, match="could not write") as e:
        write_outputs(tmp_path / "o.json", out, [{"y": 2}])
    assert e.value.message == "could not write the output file: No space left on device"
    assert (tmp_path / "o.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv", "o.json", "o.npy", "o.npz"]


def test_output_path_checked_first(tmp_path):
    with pytest.raises(InputError, match=r"unsupported output file type: expected one of .npy, .npz, .json, "
                                         r".csv, received '.txt'"):
        check_output_path(tmp_path / "o.txt")
    with pytest.raises(InputError, match="output directory not found"):
        check_output_path(tmp_path / "nodir" / "o.json")
    with pytest.raises(InputError):
        write_outputs(tmp_path / "o.parquet", {}, [])
    assert list(tmp_path.iterdir()) == []
    assert check_output_path(tmp_path / "O.JSON").name == "O.JSON"


def _lying_npy(shape: tuple[int, ...]) -> bytes:
    """An .npy whose header declares `shape` (float64) but holds only 16 bytes of data."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(16)


def test_npy_and_npz_headers_declaring_terabytes_are_refused_before_allocation(tmp_path, single):
    import zipfile

    huge = (1 << 20, 1 << 20, 3)  # 24 TiB of float64
    (tmp_path / "bomb.npy").write_bytes(_lying_npy(huge))
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as z:
        z.writestr("x.npy", _lying_npy(huge))
    for name in ("bomb.npy", "bomb.npz"):
        with pytest.raises(InputError) as e:
            read_inputs(tmp_path / name, single)
        assert "header declares shape [1048576, 1048576, 3]" in e.value.message and "holds 16 bytes" in e.value.message


def test_deeply_nested_json_input_is_an_input_error(tmp_path, single):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        read_inputs(tmp_path / "deep.json", single)


def test_a_utf8_bom_is_accepted_by_the_csv_and_json_readers(tmp_path, single):
    (tmp_path / "x.csv").write_bytes(b"\xef\xbb\xbf" + b"a,b,c,d,e,f\n1,2,3,4,5,6\n")
    assert read_inputs(tmp_path / "x.csv", single)["x"].shape == (1, 2, 3)
    (tmp_path / "x.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([[[1, 2, 3], [4, 5, 6]]]).encode())
    assert np.asarray(read_inputs(tmp_path / "x.json", single)["x"]).shape == (1, 2, 3)


def test_a_full_disk_names_the_output_file(tmp_path, monkeypatch):
    import errno
    import os

    from archc.util import write_text_atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        write_text_atomic(tmp_path / "out.txt", "x")
    assert e.value.filename == str(tmp_path / "out.txt") and "cannot write: No space left" in e.value.strerror
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
