"""Validate's memory check covers the export: the sizes it estimates at are the ones the export traces and checks at
(graph.bounds.export_runs), and what a build grows its peak memory by stays under the estimate."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from archc.errors import ArchcError
from archc.graph.bounds import TRACE, TRACE_BATCH, export_runs
from archc.graph.infer import export_bytes
from archc.graph.memory import training_refusals
from archc.pipeline import BUILD_PASSES, compile_spec, run

ROOT = Path(__file__).resolve().parents[2]


def _wide(seq: int, **extra) -> dict:
    return {"archc": 1, "model": {"name": "wide"}, "inputs": {"x": {"shape": ["seq", 64]}}, "axes": {"seq": seq},
            "task": {"kind": "regression"}, "layers": [{"op": "relu"}, {"op": "tanh"}]} | extra


def test_the_runs_are_the_trace_then_the_parity_checks():
    graph = compile_spec(_wide(100)).graph
    runs = export_runs(graph)
    assert runs[0] == (TRACE_BATCH, {"seq": 100}, TRACE)
    assert [b for b, _, _ in runs[1:]] == [1, 3] and all(s["seq"] != 100 for _, s, _ in runs[1:])
    # the estimate grows with the axis and the batch, and a compared run counts the outputs' copies
    assert export_bytes(graph, 3, {"seq": 200}) > export_bytes(graph, 3, {"seq": 100}) > \
        export_bytes(graph, 1, {"seq": 100}) > export_bytes(graph, 1, {"seq": 100}, compared=False)


def test_an_axis_the_export_cannot_hold_is_refused_before_the_build(monkeypatch):
    monkeypatch.setenv("ARCHC_MEMORY_LIMIT", str(2**30))
    # training one example at a time fits (seq 2,000,000 x 64 float32 = 488 MiB per tensor); the export's trace,
    # at a batch of 2, holds the input and two outputs: 2.9 GiB. validate reports it; the build pass refuses it
    c = compile_spec(_wide(2_000_000, train={"batch_size": 1}), name="s.json")
    assert c.graph.memory.export > 2**30 and c.graph.memory.build
    with pytest.raises(ArchcError) as e:
        run(c, BUILD_PASSES, "lower")
    assert e.value.where == "axes.seq"
    assert e.value.message.startswith("expected the export's checks to fit in memory (1.0 GiB), received 3.1 GiB "
                                      "for the export's trace at batch 2, seq 2,000,000")
    shorter = compile_spec(_wide(40_000, train={"batch_size": 1}))  # 50x shorter fits
    assert not shorter.graph.memory.build and not training_refusals(shorter.graph, shorter.spec.train)


def test_a_build_grows_its_peak_memory_by_less_than_validate_estimates(tmp_path):
    """In a fresh process (its peak is the build's): the export at seq 60,000 x 64 values."""
    spec = tmp_path / "w.json"
    spec.write_text(json.dumps(_wide(60_000)))
    script = textwrap.dedent(f"""
        import json
        import onnx, onnxruntime, torch  # noqa: F401 (their import is not the build's)
        from click.testing import CliRunner
        from archc.cli import main
        from archc.graph.bounds import TRACE, export_runs
        from archc.graph.infer import export_bytes
        from archc.pipeline import compile_spec
        graph = compile_spec({str(spec)!r}).graph
        estimate = max(export_bytes(graph, b, s, w != TRACE) for b, s, w in export_runs(graph))
        def status(key):  # kB in /proc/self/status
            return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024
        with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) restarts here: the imports' is not the build's
            f.write("5")
        before = status("VmRSS:")
        r = CliRunner().invoke(main, ["build", {str(spec)!r}, "-o", {str(tmp_path / 'w.onnx')!r}, "--no-optimize"])
        assert r.exit_code == 0, r.output
        grew = status("VmHWM:") - before
        print(json.dumps({{"estimate": estimate, "grew": grew, "output": r.output}}))
    """)
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert "seq 59999" in got["output"] and "seq 60003" in got["output"]  # the checks estimated are the ones run
    assert 0 < got["grew"] <= got["estimate"], got


def test_shortened_parity_sizes_jump_to_a_bound_instead_of_walking_to_it(monkeypatch):
    """validate computes the export's runs: shortening seq 10^9 below a slice's bound (seq > 10^8) must not walk
    there one size at a time (it took 6 s at 3 * 10^6, linear in the bound)."""
    import time

    monkeypatch.setenv("ARCHC_MEMORY_LIMIT", "1e18")
    spec = _wide(10**9, layers=[{"op": "linear", "out_features": 64}, {"op": "slice", "dim": 1, "start": 10**8}])
    start = time.perf_counter()
    graph = compile_spec(spec).graph
    assert [s["seq"] for _, s, _ in export_runs(graph)] == [10**9, 10**8 + 1, 10**8 + 2]
    assert time.perf_counter() - start < 5
