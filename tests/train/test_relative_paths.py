"""Shipped artifacts hold no absolute path the user did not write (issue 21 item 6): every file a run writes, the
ONNX metadata, `archc export` to another folder and `archc infer --report` record sources as given or relative to
the run folder; `archc quantize MODEL` and the run's test report still find the data from there."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
from click.testing import CliRunner

from archc.cli import main


def leaks(folder: Path, needles: list[bytes]) -> list[str]:
    """The files under `folder` (ONNX metadata included: it is in the file's bytes) that hold one of `needles`."""
    return [str(p) for p in sorted(folder.rglob("*")) if p.is_file() and any(n in p.read_bytes() for n in needles)]


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_a_run_and_its_exports_record_no_absolute_path(tmp_path, monkeypatch, h):
    """An image run (spec in its own folder, data beside it, run folder given relative): no file of the run, the
    exported copy elsewhere or the infer report holds the absolute tmp path; the report title says the source
    relative to the working folder; quantize without --data scores the recorded source from another folder."""
    from archc import train
    from archc.runtime import report

    monkeypatch.chdir(tmp_path)
    h.make_images(Path("project/imgs"), n=24, size=8)
    spec = h.make_image_spec(Path("project/cnn.json"), Path("imgs"), size=8, train={"epochs": 1})
    titles: list[str] = []
    real = report.write
    monkeypatch.setattr(report, "write", lambda *a: titles.append(a[-1]) or real(*a))
    train.run(spec, out="runs/cnn", quiet=True)
    needles = [str(tmp_path).encode(), str(tmp_path.resolve()).encode()]
    assert leaks(Path("runs"), needles) == []
    model = Path("runs/cnn/model.onnx")
    assert metadata(model)["archc.source"] == "images:../../project/imgs"
    assert json.loads(Path("runs/cnn/export.json").read_text())["source"] == "images:../../project/imgs"
    assert titles and titles[0].startswith("images:project/imgs, test split"), titles

    Path("shipped").mkdir()
    r = CliRunner().invoke(main, ["export", "runs/cnn", "--checkpoint", "last", "-o", "shipped/cnn.onnx"])
    assert r.exit_code == 0, r.output
    assert metadata(Path("shipped/cnn.onnx"))["archc.source"] == "images:../project/imgs"  # rebased to its folder
    r = CliRunner().invoke(main, ["infer", "shipped/cnn.onnx", "--input", "project/imgs", "--report", "shipped/rep"])
    assert r.exit_code == 0, r.output
    assert leaks(Path("shipped"), needles) == []

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    r = CliRunner().invoke(main, ["quantize", "../shipped/cnn.onnx", "--fp16", "--json"])
    assert r.exit_code == 0, r.output
    (variant,) = json.loads(r.output)
    assert variant["metric"] == "accuracy" and "images:../project/imgs, test split" in variant["data"], variant
    assert leaks(tmp_path / "shipped", needles) == []
