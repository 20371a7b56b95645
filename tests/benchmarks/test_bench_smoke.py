"""The benchmark harness itself works: `benchmarks/run.py --quick` on two cheap figures writes both reports.

CI does not run the benchmarks (`make bench` does); this only checks the driver, the row format and the writers.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_json_and_markdown(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--only", "5,export",
                           "--out", str(tmp_path), "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "results.json").read_text())
    figures = {f["figure"]: f for f in report["figures"]}
    assert set(figures) == {5, 6}
    for fig in figures.values():
        assert fig["error"] is None, fig["error"]
        assert fig["rows"], fig
        for row in fig["rows"]:
            assert {"figure", "name", "a", "b", "ratio", "goal", "met", "note"} <= set(row)
    measured = [r for r in figures[5]["rows"] + figures[6]["rows"] if r["a"] is not None]
    assert len(measured) >= 4 and all(r["a"] > 0 for r in measured)
    assert any(r["name"].startswith("validate 1000") for r in figures[5]["rows"])
    assert report["machine"]["cores"] and report["machine"]["torch"]
    md = (tmp_path / "RESULTS.md").read_text()
    assert "## 5. Compile scaling" in md and "## 6. Export time" in md
    assert "| name | a | b | ratio | goal | met | note |" in md
    assert "validate 1000 layers" in md
    assert not (tmp_path / ".results.json.tmp").exists()


def test_unknown_figure_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--only", "nope", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "unknown figure" in proc.stderr
    assert not (tmp_path / "results.json").exists()
