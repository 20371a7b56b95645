"""archc.data.jsonl: `jsonl:FILE` (one JSON object per line), its errors, and a run through train and infer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from archc.cli import main
from archc.data import load
from archc.errors import DataError


def write(path: Path, rows: list) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return f"jsonl:{path}"


def test_labels_decide_the_task_and_scalars_are_one_feature(tmp_path: Path) -> None:
    source = write(tmp_path / "r.jsonl", [{"x": i, "y": i / 4} for i in range(10)])
    d = load(source, val_fraction=0.2, test_fraction=0.2)
    assert d.task == "regression" and d.example_shape == (1,) and d.classes is None
    source = write(tmp_path / "c.jsonl", [{"x": [i, 1], "y": i % 3} for i in range(12)])
    d = load(source)
    assert d.task == "classification" and d.classes == ["0", "1", "2"] and d.example_shape == (2,)


@pytest.mark.parametrize("rows, options, message", [
    (['{"x": [1, 2], "y": 0}', '{"x": [1, 2], "y": 1'], {}, r"line 2: expected a JSON object, received text"),
    ([{"x": [1], "y": 0}, [1, 2]], {}, r"line 2: expected a JSON object, received \[1, 2\]"),
    ([{"pixel": [1], "y": 0}], {"features": "pixels"}, r"line 1: expected a field 'pixels', received fields"),
    ([{"x": [1, 2], "y": 0}, {"x": [1], "y": 1}], {},
     r"line 2, 'x': expected shape \[2\] like line 1, received \[1\]"),
    ([{"x": ["a"], "y": 0}], {}, r"line 1, 'x': expected a number or a list of numbers"),
    ([{"x": [1], "y": "cat"}, {"x": [2], "y": 3}], {}, r"line 2, 'y': expected labels of one kind"),
    ([{"x": [1], "y": [0]}], {}, r"line 1, 'y': expected a class name or a number, received \[0\]"),
    ([{"x": [1], "label": 0}], {"label": "lable"}, r"expected a field 'lable'"),
    (['{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"], {}, r"line 1: expected a JSON object of reasonable nesting"),
])
def test_errors_name_the_line_and_field(tmp_path: Path, rows, options, message) -> None:
    source = write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=message) as e:
        load(source, **options)
    assert e.value.where == source
    if "pixel" in e.value.message:
        assert e.value.hint == "did you mean 'pixel'? the option ?features=FIELD names it"
    with pytest.raises(DataError, match="does not exist"):
        load(f"jsonl:{tmp_path / 'missing.jsonl'}")


def test_trains_from_the_spec_folder_and_infer_scores_it(tmp_path: Path) -> None:
    import archc.train as train

    rows = [{"point": [i % 7 / 7, (i * 3) % 5 / 5], "side": "left" if i % 7 < 3 else "right"} for i in range(60)]
    write(tmp_path / "points.jsonl", rows)
    spec = tmp_path / "points.toml"
    spec.write_text('archc = 1\n[model]\nname = "points"\n[inputs.x]\nshape = [2]\n[task]\nkind = "classification"\n'
                    '[[layers]]\nop = "linear"\nout_features = 2\n[train]\nepochs = 2\nbatch_size = 16\n'
                    '[data]\nsource = "jsonl:points.jsonl?features=point&label=side"\n')
    result = train.run(spec, out=tmp_path / "run", quiet=True)
    assert result.test["examples"] == 12
    source = f"jsonl:{tmp_path / 'points.jsonl'}?features=point&label=side"
    r = CliRunner().invoke(main, ["infer", str(tmp_path / "run" / "model.onnx"), "--input", source])
    assert r.exit_code == 0, r.output
    assert f"{source}, test split, 12 examples: accuracy" in r.output
