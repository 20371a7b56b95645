"""The benchmark harness itself works: `benchmarks/run.py --quick` runs every figure and writes both reports.

CI does not run the benchmarks (`make bench` does); this checks the driver, every figure's quick mode, the row
format and the writers.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
ENTRY_POINT = {"FIGURE", "KEY", "TITLE", "A", "B", "run"}


def figure_modules() -> dict[str, dict[str, object]]:
    """{module name: its top-level constants and functions} for every benchmarks/bench_*.py, read without importing."""
    out = {}
    for path in sorted(BENCH.glob("bench_*.py")):
        names: dict[str, object] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                names[node.name] = [a.arg for a in node.args.args]
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                        if isinstance(t, ast.Name):
                            names[t.id] = node.value.value if isinstance(node.value, ast.Constant) else None
        out[path.stem] = names
    return out


def test_every_figure_module_has_the_entry_point() -> None:
    mods = figure_modules()
    assert len(mods) >= 9, sorted(mods)
    for name, names in mods.items():
        assert ENTRY_POINT <= set(names), f"{name}: missing {ENTRY_POINT - set(names)}"
        assert names["run"] == ["quick"], f"{name}.run takes (quick: bool)"
    numbers = [names["FIGURE"] for names in mods.values()]
    keys = [names["KEY"] for names in mods.values()]
    assert sorted(numbers) == list(range(1, len(mods) + 1)) and len(set(keys)) == len(keys)
    # everything else in benchmarks/ is the driver or a helper, and results live in their own folder
    others = {p.name for p in BENCH.iterdir() if p.is_file() and not p.name.startswith("bench_")}
    assert others <= {"run.py", "common.py", "handwritten.py", "NOTES.md"}, others
    assert {"RESULTS.md", "results.json", "gpu_results.json"} <= {p.name for p in (BENCH / "results").iterdir()}


def test_quick_run_writes_json_and_markdown(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path),
                           "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=1200)  # 139 s alone (2026-12-06, 20 figures; figure 20 launches 4 two-rank runs, 42 s); a loaded 2-core machine runs it several times slower
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "results.json").read_text())
    figures = {f["figure"]: f for f in report["figures"]}
    assert set(figures) == {names["FIGURE"] for names in figure_modules().values()}
    for fig in figures.values():
        assert fig["error"] is None, fig["error"]
        assert fig["rows"], fig
        assert fig["quick"] is True
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
    for fig in figures.values():
        assert f"## {fig['figure']}. {fig['title']}" in md


def test_only_reruns_some_figures_and_keeps_the_others(tmp_path: Path) -> None:
    """--only adds to the report in --out: figures not named keep their last results."""
    report = {"figures": [{"figure": 4, "key": "cold_start", "title": "Cold start (kept)", "a": "a", "b": "b",
                           "rows": [], "details": "", "misses": "", "seconds": 1.0, "measured": None,
                           "error": None, "quick": True}]}
    (tmp_path / "results.json").write_text(json.dumps(report))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--only", "gpu",
                           "--out", str(tmp_path), "--threads", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = {f["figure"]: f for f in json.loads((tmp_path / "results.json").read_text())["figures"]}
    assert set(figures) == {4, 8} and figures[4]["title"] == "Cold start (kept)"
    assert "## 4. Cold start (kept)" in (tmp_path / "RESULTS.md").read_text()


def test_unknown_figure_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--only", "nope", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "unknown figure" in proc.stderr
    assert not (tmp_path / "results.json").exists()
