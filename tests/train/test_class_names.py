"""Class names come from the data: training ties output positions to names, scoring matches classes by name."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import archc.train as train
from archc.cli import main
from archc.errors import DataError
from archc.runtime import Model

IMAGE_CLASSES = ("eight", "five", "four", "nine")  # sorted: eight, five, four, nine; a spec might say four, five, eight


def write_csv(path: Path, n: int = 240, seed: int = 0) -> Path:
    """Four features; the target names the largest of the first three: class_0, class_1 or class_2."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    y = np.argmax(x[:, :3], axis=1)
    rows = [",".join(f"{v:.4f}" for v in r) + f",class_{c}" for r, c in zip(x, y)]
    path.write_text("a,b,c,d,target\n" + "\n".join(rows) + "\n")
    return path


def write_images(folder: Path, classes: tuple[str, ...], per_class: int = 20, seed: int = 0) -> Path:
    """One sub-folder per class of 1x4x4 .npy images: class k of IMAGE_CLASSES is bright in its own pixel."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True)
        k = IMAGE_CLASSES.index(name)
        for i in range(per_class):
            img = rng.random((1, 4, 4)).astype(np.float32) * 0.2
            img[0, 0, k] = 1.0
            np.save(folder / name / f"{i}.npy", img)
    return folder


def write_spec(path: Path, source: str, shape: list[int], classes: int, labels: list[str] | None) -> Path:
    layers = ([{"op": "flatten"}] if len(shape) > 1 else []) + [
        {"op": "linear", "out_features": 16, "act": "relu"}, {"id": "logits", "op": "linear", "out_features": classes}]
    task = {"kind": "classification"} | ({"labels": labels} if labels is not None else {})
    spec = {"archc": 1, "model": {"name": "names"}, "inputs": {"x": {"shape": shape}}, "task": task,
            "layers": layers, "train": {"epochs": 25, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 0.01}},
            "data": {"source": source, "normalize": True}}
    path.write_text(json.dumps(spec))
    return path


def infer_json(model: Path, source: str, *more: str) -> dict:
    r = CliRunner().invoke(main, ["infer", str(model), "--input", source, "--json", "--device", "cpu", *more])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def truth_names(source: str, split: str = "test") -> list[str]:
    """The class name of every example of a split, straight from the data (as loaded, split as training splits)."""
    from archc.data import load

    ds = load(source, task="classification")
    return [ds.classes[i] for i in getattr(ds, split).y]


def test_csv_string_targets_under_spec_labels_in_another_order(tmp_path):
    data = write_csv(tmp_path / "t.csv")
    labels = ["class_2", "class_0", "class_1"]
    spec = write_spec(tmp_path / "s.json", f"csv:{data}", [4], 3, labels)
    result = train.run(spec, out=tmp_path / "run", quiet=True)
    assert result.labels == labels and result.test["accuracy"] > 0.85
    model = tmp_path / "run" / "model.onnx"
    assert Model.open(model, device="cpu").task["labels"] == labels
    got = infer_json(model, f"csv:{data}")
    names = [r["label"] for r in got["records"]]
    right = np.mean(np.array(names) == np.array(truth_names(f"csv:{data}")))
    assert right == pytest.approx(got["metrics"]["accuracy"]) and right > 0.85  # names as right as the score


def test_image_folders_sorting_unlike_the_spec_labels(tmp_path):
    classes = ("eight", "five", "four")
    folder = write_images(tmp_path / "img", classes)
    labels = ["four", "five", "eight"]
    spec = write_spec(tmp_path / "s.json", f"images:{folder}", [1, 4, 4], 3, labels)
    train.run(spec, out=tmp_path / "run", quiet=True)
    got = infer_json(tmp_path / "run" / "model.onnx", f"images:{folder}", "--split", "train")
    assert [r["label"] for r in got["records"]] == truth_names(f"images:{folder}", "train")
    assert got["metrics"]["accuracy"] == 1.0


def test_without_spec_labels_the_data_names_are_stored(tmp_path):
    folder = write_images(tmp_path / "img", ("five", "four", "eight"))
    spec = write_spec(tmp_path / "s.json", f"images:{folder}", [1, 4, 4], 3, None)
    result = train.run(spec, out=tmp_path / "run", quiet=True)
    stored = json.loads((tmp_path / "run" / "result.json").read_text())["labels"]
    assert result.labels == stored == ["eight", "five", "four"]  # the source's order: folder names sorted
    model = tmp_path / "run" / "model.onnx"
    assert Model.open(model, device="cpu").task["labels"] == stored
    got = infer_json(model, f"images:{folder}", "--split", "train")
    assert [r["label"] for r in got["records"]] == truth_names(f"images:{folder}", "train")


def test_a_subset_of_the_classes_scores_its_true_accuracy_and_an_unseen_class_is_an_error(tmp_path):
    folder = write_images(tmp_path / "img", ("eight", "five", "four"))
    spec = write_spec(tmp_path / "s.json", f"images:{folder}", [1, 4, 4], 3, None)
    train.run(spec, out=tmp_path / "run", quiet=True)
    model = tmp_path / "run" / "model.onnx"
    subset = write_images(tmp_path / "sub", ("five", "four"), seed=1)  # renumbered 0..1 it would score ~0
    got = infer_json(model, f"images:{subset}", "--split", "train")
    assert got["metrics"]["accuracy"] == 1.0
    assert [r["label"] for r in got["records"]] == truth_names(f"images:{subset}", "train")
    unseen = write_images(tmp_path / "unseen", ("five", "nine"), seed=2)
    r = CliRunner().invoke(main, ["infer", str(model), "--input", f"images:{unseen}", "--device", "cpu"])
    assert r.exit_code == 1, r.output
    assert f"images:{unseen}: expected classes the model was trained on ('eight', 'five', 'four'), " \
           "received 'nine' in the data, which the model never saw" in r.output


def test_spec_labels_that_disagree_with_the_data_are_one_located_error(tmp_path):
    data = write_csv(tmp_path / "t.csv")
    spec = write_spec(tmp_path / "s.json", f"csv:{data}", [4], 3, ["class_2", "class_0", "class_9"])
    with pytest.raises(DataError) as e:
        train.run(spec, out=tmp_path / "run", quiet=True)
    assert e.value.where == "task.labels" and e.value.file == str(spec)
    assert e.value.message == (f"expected the classes of data csv:{data} ('class_0', 'class_1', 'class_2'), received "
                               "labels 'class_2', 'class_0', 'class_9'; labels the data lacks: 'class_9'; data "
                               "classes not in the labels: 'class_1'")
    assert not (tmp_path / "run").exists()  # found before any training
    r = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run"), "--quiet"])
    assert r.exit_code == 1 and f"{spec}: task.labels: expected the classes of data csv:" in r.output


def test_integer_classes_beyond_the_named_outputs_are_an_error(h, tmp_path):
    """Integer targets against labels that are names: the value is the output position, so 3 of 3 outputs is out."""
    data = h.make_npz(tmp_path / "d.npz", classes=4)
    spec = write_spec(tmp_path / "s.json", f"npz:{data}", [16], 3, ["a", "b", "c"])
    with pytest.raises(DataError, match=r"data classes beyond the 3 outputs: '3'") as e:
        train.run(spec, out=tmp_path / "run", quiet=True)
    assert e.value.where == "task.labels"


def test_multilabel_columns_named_by_the_data_follow_the_spec_labels(tmp_path):
    """An npz whose `classes` name y's columns c, a, b: label 'a' is x0 > 0, 'b' x1 > 0, 'c' x2 > 0."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 4)).astype(np.float32)
    on = x[:, :3] > 0                                                               # columns a, b, c
    np.savez(tmp_path / "tags.npz", x=x, y=on[:, [2, 0, 1]].astype(np.int64), classes=np.array(["c", "a", "b"]))
    spec = {"archc": 1, "model": {"name": "tags"}, "inputs": {"x": {"shape": [4]}},
            "task": {"kind": "multilabel", "labels": ["a", "b", "c"]},
            "layers": [{"op": "linear", "out_features": 16, "act": "relu"}, {"op": "linear", "out_features": 3}],
            "train": {"epochs": 20, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 0.01}},
            "data": {"source": f"npz:{tmp_path / 'tags.npz'}"}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    result = train.run(tmp_path / "s.json", out=tmp_path / "run", quiet=True)
    assert result.labels == ["a", "b", "c"] and result.test["label_accuracy"] > 0.9
    model = tmp_path / "run" / "model.onnx"
    np.save(tmp_path / "probe.npy", np.array([[3, -3, -3, 0], [-3, 3, 3, 0]], dtype=np.float32))
    got = infer_json(model, str(tmp_path / "probe.npy"))
    assert [r["labels"] for r in got] == [["a"], ["b", "c"]]
    scored = infer_json(model, f"npz:{tmp_path / 'tags.npz'}")
    assert scored["metrics"]["label_accuracy"] == pytest.approx(result.test["label_accuracy"])
    spec["task"]["labels"] = ["a", "b", "d"]
    (tmp_path / "s.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="labels the data lacks: 'd'; data columns not in the labels: 'c'"):
        train.run(tmp_path / "s.json", out=tmp_path / "run2", quiet=True)


def test_integer_csv_targets_keep_their_values_when_a_file_holds_some_of_them(tmp_path):
    """Trained on targets 0/1/2 (no spec labels: '0', '1', '2'), scored on a file of 1s and 2s only: by value."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 4))
    y = np.argmax(x[:, :3], axis=1)
    rows = [",".join(f"{v:.4f}" for v in r) + f",{c}" for r, c in zip(x, y)]
    (tmp_path / "all.csv").write_text("a,b,c,d,y\n" + "\n".join(rows) + "\n")
    (tmp_path / "some.csv").write_text("a,b,c,d,y\n" + "\n".join(r for r, c in zip(rows, y) if c > 0) + "\n")
    spec = write_spec(tmp_path / "s.json", f"csv:{tmp_path / 'all.csv'}", [4], 3, None)
    result = train.run(spec, out=tmp_path / "run", quiet=True)
    assert result.labels == ["0", "1", "2"]
    got = infer_json(tmp_path / "run" / "model.onnx", f"csv:{tmp_path / 'some.csv'}", "--split", "train")
    truth = truth_names(f"csv:{tmp_path / 'some.csv'}", "train")
    right = np.mean(np.array([r["label"] for r in got["records"]]) == np.array(truth))
    assert got["metrics"]["accuracy"] == pytest.approx(right) and right > 0.85


def test_a_model_without_labels_is_scored_by_index(tmp_path):
    """An older file (archc.task without labels) still reads and scores a labelled source, by index."""
    import onnx

    folder = write_images(tmp_path / "img", ("eight", "five", "four"))
    spec = write_spec(tmp_path / "s.json", f"images:{folder}", [1, 4, 4], 3, None)
    train.run(spec, out=tmp_path / "run", quiet=True)
    m = onnx.load(str(tmp_path / "run" / "model.onnx"))
    for prop in m.metadata_props:
        if prop.key == "archc.task":
            prop.value = json.dumps({"kind": "classification", "labels": None})
    onnx.save(m, str(tmp_path / "old.onnx"))
    got = infer_json(tmp_path / "old.onnx", f"images:{folder}", "--split", "train")
    assert got["metrics"]["accuracy"] == 1.0 and {r["label"] for r in got["records"]} == {"0", "1", "2"}
