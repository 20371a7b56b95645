"""archc.data.classes: a dataset's classes placed among a model's labels, by name or (integers) by value."""
from __future__ import annotations

import numpy as np

from archc.data import load
from archc.data.classes import match, numbered, reindex


def test_names_match_in_any_order():
    found = match(["class_0", "class_1", "class_2"], ["class_2", "class_0", "class_1"])
    assert found.positions.tolist() == [1, 2, 0] and not found.missing and not found.unknown


def test_a_subset_keeps_its_positions_and_reports_missing_labels():
    found = match(["five", "four"], ["eight", "five", "four"])
    assert found.positions.tolist() == [1, 2] and found.missing == ["eight"] and not found.unknown


def test_unknown_classes_are_named():
    found = match(["five", "nine"], ["eight", "five", "four"])
    assert found.positions.tolist() == [1, -1] and found.unknown == ["nine"]


def test_numbered_classes_are_positions_against_named_labels_and_names_against_numbered_ones():
    assert numbered(["0", "10"]) and not numbered(["01"]) and not numbered(["-1"]) and not numbered([])
    by_value = match(["0", "2", "3"], ["a", "b", "c"])
    assert by_value.by_value and by_value.positions.tolist() == [0, 2, -1] and by_value.unknown == ["3"]
    assert by_value.missing == ["b"]
    by_name = match(["1", "5", "9"], ["9", "5", "1"])
    assert not by_name.by_value and by_name.positions.tolist() == [2, 1, 0]


def test_reindex_renumbers_every_split_and_names_the_labels(tmp_path):
    rows = [f"{i},{['b', 'a', 'c'][i % 3]}" for i in range(30)]
    (tmp_path / "t.csv").write_text("x,y\n" + "\n".join(rows) + "\n")
    ds = load(f"csv:{tmp_path / 't.csv'}")
    assert ds.classes == ["a", "b", "c"]
    labels = ["c", "b", "a"]
    out = reindex(ds, match(ds.classes, labels).positions, labels)
    assert out.classes == labels
    for name in ("train", "val", "test"):
        before, after = getattr(ds, name).y, getattr(out, name).y
        assert [ds.classes[i] for i in before] == [labels[i] for i in after]
        assert np.array_equal(getattr(ds, name).x, getattr(out, name).x)


def test_validate_refuses_a_label_given_twice():
    """Labels name output positions by name, so one name for two outputs is ambiguous: validate says so."""
    import pytest

    from archc.errors import SpecError
    from archc.pipeline import compile_spec

    spec = {"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [4]}},
            "task": {"kind": "classification", "labels": ["a", "b", "a"]},
            "layers": [{"op": "linear", "out_features": 3}]}
    with pytest.raises(SpecError, match="expected distinct labels, received 'a' more than once") as e:
        compile_spec(spec)
    assert e.value.where == "task.labels"


def test_an_npz_names_multilabel_columns(tmp_path):
    import pytest

    from archc.errors import DataError

    y = (np.arange(60).reshape(20, 3) % 2).astype(np.int64)
    np.savez(tmp_path / "t.npz", x=np.ones((20, 2), np.float32), y=y, classes=np.array(["c", "a", "b"]))
    assert load(f"npz:{tmp_path / 't.npz'}", task="regression").classes == ["c", "a", "b"]
    np.savez(tmp_path / "bad.npz", x=np.ones((20, 2), np.float32), y=y, classes=np.array(["a", "b"]))
    with pytest.raises(DataError, match="expected 'classes' to name the 3 columns of 'y', received 2 names"):
        load(f"npz:{tmp_path / 'bad.npz'}", task="regression")
