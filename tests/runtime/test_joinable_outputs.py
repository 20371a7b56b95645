"""`archc infer -o` outputs join back to their inputs (issue 21 item 5): each record's `row` (a data source's
example position, a CSV's row as messages count it, an array's position) or `file` (relative to the folder given,
a glob's match as spelt), in CSV, JSON and npz; the predicted class is `predicted_index`; --json honours --limit;
a glob of class folders makes a report. The model echoes its input beside its scores, so a row is checked
against the source's own example at that position."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image

from archc.cli import main

F32 = TensorProto.FLOAT
DIGITS = [str(i) for i in range(10)]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def echo_model(path: Path, shape: list, classes: int, labels: list[str]) -> Path:
    """x [batch, *shape] -> scores [batch, classes] (Flatten @ W, the task's output) and echo (x flattened)."""
    width = int(np.prod(shape))
    x = helper.make_tensor_value_info("x", F32, ["batch", *shape])
    w = np.random.default_rng(0).standard_normal((width, classes)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["echo"]), helper.make_node("MatMul", ["echo", "W"], ["scores"])]
    outs = [helper.make_tensor_value_info("scores", F32, ["batch", classes]),
            helper.make_tensor_value_info("echo", F32, ["batch", width])]
    graph = helper.make_graph(nodes, "g", [x], outs, [helper.make_tensor("W", F32, w.shape, w.ravel())])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    meta = {"archc.inputs": {"x": {"shape": ["batch", *shape], "dtype": "float32"}},
            "archc.outputs": {"scores": {"shape": ["batch", classes], "dtype": "float32", "kind": "logits"},
                              "echo": {"shape": ["batch", width], "dtype": "float32", "kind": "values"}},
            "archc.task": {"kind": "classification", "labels": labels}}
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=json.dumps(v))
    onnx.save(m, str(path))
    return path


def test_a_source_split_carries_each_example_position_in_the_source(tmp_path):
    """sklearn:digits' test split: npz `row` indexes the source's own arrays (the echo is that example), the CSV
    and JSON records carry the same rows, first, with predicted_index (not index)."""
    from sklearn.datasets import load_digits

    model = echo_model(tmp_path / "m.onnx", [1, 8, 8], 10, DIGITS)  # digits read as 8x8 images
    r = run("infer", model, "--input", "sklearn:digits", "-o", tmp_path / "p.npz")
    assert r.exit_code == 0, r.output
    z = np.load(tmp_path / "p.npz")
    rows = z["row"]
    digits = load_digits()
    assert len(rows) == len(z["echo"]) < len(digits.data) and len(set(rows.tolist())) == len(rows)
    np.testing.assert_array_equal(z["echo"], (digits.data[rows] / 16).astype(np.float32))  # the source scales by 16
    r = run("infer", model, "--input", "sklearn:digits", "-o", tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:3] == ["row", "true", "label"] and "predicted_index" in table[0] and "index" not in table[0]
    assert [int(t["row"]) for t in table] == rows.tolist()
    assert all(t["true"] == str(digits.target[int(t["row"])]) for t in table)  # the row is the labelled example
    assert all(t["label"] == DIGITS[int(t["predicted_index"])] for t in table)
    r = run("infer", model, "--input", "sklearn:digits", "-o", tmp_path / "p.json", "--json", "--limit", "3")
    assert [rec["row"] for rec in json.loads(r.stdout)["records"]] == rows[:3].tolist()  # --json: --limit rows
    assert [rec["row"] for rec in json.loads((tmp_path / "p.json").read_text())] == rows.tolist()  # the file: all
    r = run("infer", model, "--input", "sklearn:digits", "--json")
    assert len(json.loads(r.stdout)["records"]) == len(rows) > 20  # no --limit: every record


def test_value_files_number_rows_as_their_messages_do(tmp_path):
    """A CSV of values: its row numbers (a header is row 1, a blank line skipped), the numbers its errors use; an
    .npy: positions from 0."""
    model = echo_model(tmp_path / "m.onnx", [2], 2, ["a", "b"])
    (tmp_path / "in.csv").write_text("f1,f2\n1,2\n\n3,4\n5,6\n")
    r = run("infer", model, "--input", tmp_path / "in.csv", "-o", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    assert [rec["row"] for rec in json.loads((tmp_path / "p.json").read_text())] == [2, 4, 5]
    (tmp_path / "bad.csv").write_text("f1,f2\n1,2\n\n3,x\n")
    assert "row 4, column 2" in run("infer", model, "--input", tmp_path / "bad.csv").output
    np.save(tmp_path / "in.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    r = run("infer", model, "--input", tmp_path / "in.npy", "-o", tmp_path / "p.npz")
    assert r.exit_code == 0, r.output
    z = np.load(tmp_path / "p.npz")
    assert z["row"].tolist() == [0, 1, 2] and z["echo"][2].tolist() == [4, 5]


def save(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (4, 4), dtype=np.uint8)).save(path)


def test_image_files_carry_their_path_and_a_glob_of_class_folders_makes_a_report(tmp_path, monkeypatch):
    """A folder: paths relative to it; a glob: each match as the pattern spells it (npz and CSV alike); a glob over
    class folders is scored and reported; loose files are refused a report with what it needs."""
    monkeypatch.chdir(tmp_path)
    model = echo_model(Path("m.onnx"), [1, 4, 4], 2, ["cat", "dog"])
    for i, cls in enumerate(["cat", "dog", "cat"]):
        save(Path(f"pets/{cls}/{i}.png"), i)
        save(Path(f"loose/{cls}-{i}.png"), i)
    r = run("infer", model, "--input", "loose", "-o", "p.npz")
    assert r.exit_code == 0, r.output
    z = np.load("p.npz")
    assert z["file"].tolist() == ["cat-0.png", "cat-2.png", "dog-1.png"]
    r = run("infer", model, "--input", "pets", "-o", "p.csv")  # a labelled folder: paths below it
    with open("p.csv", newline="") as f:
        assert [(t["file"], t["true"]) for t in csv.DictReader(f)] == [("cat/0.png", "cat"), ("cat/2.png", "cat"),
                                                                      ("dog/1.png", "dog")]
    r = run("infer", model, "--input", "pets/*/*.png", "-o", "p.csv", "--report", "rep")
    assert r.exit_code == 0, r.output
    with open("p.csv", newline="") as f:
        assert [(t["file"], t["true"]) for t in csv.DictReader(f)] == [("pets/cat/0.png", "cat"),
                                                                      ("pets/cat/2.png", "cat"),
                                                                      ("pets/dog/1.png", "dog")]
    assert json.loads(Path("rep/report.json").read_text())["confusion_matrix"]
    assert "labelled by their folders: accuracy" in r.stdout
    r = run("infer", model, "--input", "loose/*.png", "--report", "rep2")
    assert r.exit_code == 1 and "expected labelled data for --report" in r.output and "class folders" in r.output
    assert not Path("rep2").exists()


def test_a_test_split_of_its_own_arrays_is_numbered_in_them(tmp_path):
    """An npz with x_test: the test split's rows index x_test; --split all mixes two arrays' positions, so it
    carries no row rather than an ambiguous one."""
    rng = np.random.default_rng(0)
    x, x_test = rng.standard_normal((20, 2)).astype(np.float32), rng.standard_normal((6, 2)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 2, x_test=x_test, y_test=np.arange(6) % 2)
    model = echo_model(tmp_path / "m.onnx", [2], 2, ["0", "1"])
    r = run("infer", model, "--input", f"npz:{tmp_path / 'd.npz'}", "-o", tmp_path / "p.npz")
    assert r.exit_code == 0, r.output
    z = np.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(z["echo"], x_test[z["row"]])
    r = run("infer", model, "--input", f"npz:{tmp_path / 'd.npz'}", "--split", "all", "--json")
    assert r.exit_code == 0 and "row" not in json.loads(r.stdout)["records"][0]
