"""A run reads its data once (issue 21, item 8): the test split's report scores the split as training read it, with
no file of the source opened again, and its figures are those `archc infer --report` makes reading the source."""
from __future__ import annotations

import functools
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import archc.train as train
import archc.train.loop as loop
from archc.cli import main
from archc.data.images import ImageFolders
from archc.data.tabular import CsvTable
from archc.runtime import Model
from archc.runtime.evaluate import load_split, read_split

_WATCHED: list[tuple[str, Counter]] = []  # (folder or file, opens by phase) while a test watches it


def _audit(event: str, args: tuple) -> None:
    """Count every open of a watched path (any reader: Python's open, pathlib, Pillow) by the current phase."""
    if event == "open" and _WATCHED and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(args[0]))
        for root, opens in _WATCHED:
            if path == root or path.startswith(root + os.sep):
                opens[PHASE[0]] += 1


PHASE = ["train"]
sys.addaudithook(_audit)  # an audit hook stays for the process: it counts only while a test watches a path


@pytest.fixture
def opens(monkeypatch):
    """opens(path) -> Counter of its opens by phase ('train'; 'report' inside write_report); and the loads of
    the csv: and images: sources, counted in `loads`."""
    loads: Counter = Counter()
    for cls in (CsvTable, ImageFolders):
        original = cls.load

        @functools.wraps(original)  # the source's signature: load() passes what it declares
        def counted(self, *a, _original=original, **k):
            loads[self.name] += 1
            return _original(self, *a, **k)
        monkeypatch.setattr(cls, "load", counted)
    report = loop.write_report

    def in_report(*a, **k):
        PHASE[0] = "report"
        try:
            return report(*a, **k)
        finally:
            PHASE[0] = "train"
    monkeypatch.setattr(loop, "write_report", in_report)

    def watch(path: Path) -> Counter:
        _WATCHED.append((os.path.abspath(path), Counter()))
        return _WATCHED[-1][1]
    watch.loads = loads  # type: ignore[attr-defined]
    yield watch
    _WATCHED.clear()


def _same_as_infer(run: Path, source: str, tmp_path: Path) -> None:
    """The run's report.json is the one `archc infer model.onnx --input SOURCE --report DIR` writes reading the
    source itself (training adds only its tabular baselines), and read_split gives load_split's split."""
    got = json.loads((run / "report.json").read_text())
    r = CliRunner().invoke(main, ["infer", str(run / "model.onnx"), "--input", source, "--report",
                                  str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    got.pop("baselines", None)
    assert json.loads((tmp_path / "rep" / "report.json").read_text()) == got


def _equal_splits(a, b) -> None:
    assert a.description == b.description and a.names == b.names and a.rows == b.rows and a.notes == b.notes
    assert list(a.feeds) == list(b.feeds)
    for name in a.feeds:
        np.testing.assert_array_equal(np.asarray(a.feeds[name]), np.asarray(b.feeds[name]))
    np.testing.assert_array_equal(a.y, b.y)


def _csv(path: Path, regression: bool) -> Path:
    rng = np.random.default_rng(0)
    rows = ["size,colour,weight,label"]
    for i in range(90):
        colour = ["red", "green", "blue"][i % 3]
        weight = "" if i % 11 == 0 else f"{rng.normal(3, 1):.3f}"
        label = f"{i % 3 * 1.5 + rng.normal(0, 0.1):.4f}" if regression else ["a", "b"][(i // 3) % 2]
        rows.append(f"{rng.integers(1, 9)},{colour},{weight},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_csv_run_reads_its_file_once(kind, tmp_path, opens, monkeypatch):
    """A csv: source read by declared columns: one load, the report opens the file no more and scores what infer
    scores reading the file (a regression's residuals from the same float cells)."""
    data = _csv(tmp_path / "t.csv", kind == "regression")
    spec = {"archc": 1, "model": {"name": "row"},
            "inputs": {"row": {"columns": {"size": "numeric", "weight": "numeric",
                                           "colour": {"type": "categorical", "categories": ["red", "green", "blue"]}},
                               "missing": "median"}},
            "task": {"kind": kind},
            "layers": [{"op": "linear", "out_features": 8, "act": "relu"},
                       {"op": "linear", "out_features": 2 if kind == "classification" else 1}],
            "train": {"epochs": 1, "batch_size": 16},
            "data": {"source": "csv:t.csv", "target": "label"}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    monkeypatch.chdir(tmp_path)
    held = []
    write = loop.write_report
    monkeypatch.setattr(loop, "write_report", lambda *a, **k: held.append(a[3]) or write(*a, **k))
    counted = opens(data)
    train.run(tmp_path / "s.json", out=tmp_path / "run", quiet=True)
    assert sum(opens.loads.values()) == 1 and counted["train"] > 0 and counted["report"] == 0, (opens.loads, counted)
    _same_as_infer(tmp_path / "run", "csv:t.csv", tmp_path)
    model = Model.open(tmp_path / "run" / "model.onnx", device="cpu")
    _equal_splits(read_split(model, "csv:t.csv", held[0]), load_split(model, "csv:t.csv"))


def test_image_folder_run_decodes_each_image_once(tmp_path, opens):
    """An images: folder decoded into memory: each file opened in the one load, none by the report; the report's
    figures and file names are infer's."""
    rng = np.random.default_rng(1)
    for k, cls in enumerate(["dark", "light"]):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(12):
            px = np.clip(rng.integers(0, 90, (6, 6)) + 140 * k, 0, 255).astype(np.uint8)
            Image.fromarray(px).save(tmp_path / "imgs" / cls / f"{i}.png")
    spec = {"archc": 1, "model": {"name": "shade"}, "inputs": {"x": {"shape": [1, 6, 6]}},
            "layers": [{"op": "flatten"}, {"op": "linear", "out_features": 2}],
            "train": {"epochs": 1, "batch_size": 4},
            "data": {"source": f"images:{tmp_path / 'imgs'}", "val_fraction": 0.25, "test_fraction": 0.25}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    counted = opens(tmp_path / "imgs")
    train.run(tmp_path / "s.json", out=tmp_path / "run", quiet=True)
    assert sum(opens.loads.values()) == 1 and counted["report"] == 0, (opens.loads, counted)
    assert 24 <= counted["train"] <= 48  # each of the 24 files decoded in the one load (a header read at most too)
    _same_as_infer(tmp_path / "run", f"images:{tmp_path / 'imgs'}", tmp_path)
    assert json.loads((tmp_path / "run" / "report.json").read_text())["examples"] == 6
